"""The payout action types, registered with the governance gateway's registry so that the decision
API knows them (a service may ask, with dry_run, whether a payout would be allowed). The payout
engine itself decides them in billing/payouts.py."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing.money import CURRENCY_EXPONENTS
from server.governance.actions import ActionType, register_action


class PayoutParamsSchema(Schema):
    payout_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    affiliate_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))  # minor units
    currency = fields.String(required=True, validate=validate.OneOf(sorted(CURRENCY_EXPONENTS)))
    provider = fields.String(required=True, validate=validate.OneOf(["stripe", "paypal", "none"]))
    manual = fields.Boolean(load_default=False)
    payments_mode = fields.String(load_default="test", validate=validate.OneOf(["test", "live"]))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


PAYOUT_ACTIONS = (
    ActionType(
        "payout.create", "Pay an affiliate (the treasury's or a manual payout)", PayoutParamsSchema, ("affiliate",)
    ),
    ActionType("payout.approve", "Approve a payout waiting for a finance approval", PayoutParamsSchema, ("affiliate",)),
    ActionType("payout.reject", "Reject a payout waiting for a finance approval", PayoutParamsSchema, ("affiliate",)),
)

for _action in PAYOUT_ACTIONS:
    register_action(_action)
