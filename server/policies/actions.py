"""The policy lifecycle's action types, registered with the governance gateway's registry.

Every publish, activation, rollback and shadow start or stop is decided by the `policy_lifecycle`
Rego package (rego/smartlinks/policy_lifecycle) and recorded with its actor like any action."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from server.governance.actions import ActionType, register_action

PUBLISH = "policy.publish"
ACTIVATE = "policy.activate"
ROLLBACK = "policy.rollback"
SHADOW_START = "policy.shadow_start"
SHADOW_STOP = "policy.shadow_stop"

REVISION = validate.Length(min=1, max=80)


class PublishParamsSchema(Schema):
    revision = fields.String(required=True, validate=REVISION)
    sha256 = fields.String(load_default=None, validate=validate.Length(equal=64))
    message = fields.String(load_default=None, validate=validate.Length(max=2000))
    bootstrap = fields.Boolean(load_default=False)


class ActivateParamsSchema(Schema):
    revision = fields.String(required=True, validate=REVISION)
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))
    bootstrap = fields.Boolean(load_default=False)


class RollbackParamsSchema(Schema):
    revision = fields.String(load_default=None, validate=REVISION)
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))


class ShadowParamsSchema(Schema):
    revision = fields.String(load_default=None, validate=REVISION)


def register() -> None:
    """Add the policy action types to the registry (idempotent)."""
    for action in (
        ActionType(
            PUBLISH, "Publish a policy version (built, checked, tested, signed)", PublishParamsSchema, ("policy",)
        ),
        ActionType(
            ACTIVATE,
            "Make a validated policy version the one every sidecar enforces",
            ActivateParamsSchema,
            ("policy",),
        ),
        ActionType(ROLLBACK, "Return to the previously active policy version", RollbackParamsSchema, ("policy",)),
        ActionType(
            SHADOW_START,
            "Evaluate live decisions with a policy version too, never enforced",
            ShadowParamsSchema,
            ("policy",),
        ),
        ActionType(SHADOW_STOP, "Stop the shadow evaluation", ShadowParamsSchema, ("policy",)),
    ):
        register_action(action)


register()
