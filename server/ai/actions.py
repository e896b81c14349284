"""The AI supervisor's action types and their parameter schemas, registered with the governance
action registry when this module is imported (as `server.governance.actions` registers its own;
the `server` package imports it, so the app, the CLI and the decision API all know them).

The schemas are strict: unknown fields, strings where numbers belong, NaN and infinities are
refused. The same schemas validate the model's output (`server.ai.validation`), so what reaches the
policy has the shape the policy expects; the policy decides whether it may run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from server.governance.actions import ActionType, get_action_type, register_action

AI_ACTOR_ID = "ai:supervisor"
ALERT_SEVERITIES = ("info", "warning", "error", "critical")
ID = validate.Regexp(r"^[A-Za-z0-9_.:-]{1,128}$", error="must be an id (letters, digits, _ . : -)")


class StrictNumber(fields.Float):
    """A finite JSON number: strings and booleans are refused (a float field would parse "0.9")."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("must be a number")
        if not math.isfinite(float(value)):
            raise ValidationError("must be a finite number")
        return float(value)


class AiReasonSchema(Schema):
    reason = fields.String(validate=validate.Length(max=500), load_default=None)


class SetParamSchema(Schema):
    param = fields.String(required=True, validate=validate.Regexp(r"^[a-z_]{1,40}$"))
    value = StrictNumber(required=True)
    reason = fields.String(validate=validate.Length(max=500), load_default=None)


class BudgetShiftSchema(Schema):
    from_campaign = fields.String(required=True, validate=ID)
    to_campaign = fields.String(required=True, validate=ID)
    amount = StrictNumber(required=True, validate=validate.Range(min=0, min_inclusive=False, max=1e9))
    reason = fields.String(validate=validate.Length(max=500), load_default=None)


class AlertSchema(Schema):
    severity = fields.String(required=True, validate=validate.OneOf(ALERT_SEVERITIES))
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    detail = fields.String(validate=validate.Length(max=2000), load_default=None)


class ReviewRequestSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class UndoSchema(Schema):
    proposal_id = fields.String(required=True, validate=ID)
    reason = fields.String(validate=validate.Length(max=500), load_default=None)


AI_ACTIONS = (
    ActionType("ai.link.pause", "The AI supervisor pauses a smart link", AiReasonSchema, ("link",)),
    ActionType("ai.link.resume", "The AI supervisor resumes a paused smart link", AiReasonSchema, ("link",)),
    ActionType("ai.offer.pause", "The AI supervisor pauses an offer", AiReasonSchema, ("offer",)),
    ActionType("ai.offer.resume", "The AI supervisor resumes a paused offer", AiReasonSchema, ("offer",)),
    ActionType(
        "ai.algorithm.set_param",
        "The AI supervisor changes one parameter of a link's algorithm",
        SetParamSchema,
        ("link",),
    ),
    ActionType(
        "ai.budget.shift",
        "The AI supervisor moves daily budget between two campaigns",
        BudgetShiftSchema,
        ("campaign",),
    ),
    ActionType("ai.alert", "The AI supervisor raises an alert for people", AlertSchema, ("link", "offer", "campaign")),
    ActionType(
        "ai.review.request",
        "The AI supervisor asks a person to look at something",
        ReviewRequestSchema,
        ("link", "offer", "campaign"),
    ),
    ActionType("ai.undo", "A person undoes an executed AI action", UndoSchema, ("link", "offer", "campaign")),
)
#: What the supervisor may propose (ai.undo is a person's action).
PROPOSAL_TYPES = tuple(a.name for a in AI_ACTIONS if a.name != "ai.undo")
#: Proposals that change state and can therefore be undone.
UNDOABLE_TYPES = frozenset(
    {
        "ai.link.pause",
        "ai.link.resume",
        "ai.offer.pause",
        "ai.offer.resume",
        "ai.algorithm.set_param",
        "ai.budget.shift",
    }
)
#: The target kind each proposal needs (None: any of the registered kinds, or none).
TARGET_KINDS: dict[str, str | None] = {
    "ai.link.pause": "link",
    "ai.link.resume": "link",
    "ai.offer.pause": "offer",
    "ai.offer.resume": "offer",
    "ai.algorithm.set_param": "link",
    "ai.budget.shift": "campaign",
    "ai.alert": None,
    "ai.review.request": None,
}
#: Not registered: the record of a proposal the validator refused (the policy always denies it).
INVALID_TYPE = "ai.invalid"


for _action in AI_ACTIONS:
    if get_action_type(_action.name) is None:
        register_action(_action)


def params_schema(action_type: str) -> Schema:
    for action in AI_ACTIONS:
        if action.name == action_type:
            return action.params_schema()
    raise KeyError(action_type)
