"""The action types the gateway knows, each with a marshmallow schema for its params.

A later capability registers its own action types here (`register_action`) next to its code;
the decision API refuses a type that nobody registered with a 400 problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

ACTOR_KINDS = ("user", "service", "algorithm", "ai", "system")


class WeightsSchema(Schema):
    algorithm = fields.String(required=True, validate=validate.OneOf(["traffic_optimizer", "thompson_sampling", "ucb"]))
    weights = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=128)),
        values=fields.Float(validate=validate.Range(min=0.0, max=1.0), allow_nan=False),
        required=True,
    )

    @validates_schema
    def _non_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("weights"):
            raise ValidationError("at least one arm is required", "weights")


class BudgetsSchema(Schema):
    budgets = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=128)),
        values=fields.Float(validate=validate.Range(min=0.0), allow_nan=False),
        required=True,
    )

    @validates_schema
    def _non_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("budgets"):
            raise ValidationError("at least one campaign is required", "budgets")


class LinkConfigureSchema(Schema):
    algorithm = fields.String(required=True, validate=validate.Length(min=1, max=64))
    algorithm_params = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)), required=True)


class LinkCommissionSchema(Schema):
    commission_rate = fields.Float(required=True, validate=validate.Range(min=0.0, max=1.0), allow_nan=False)


class UserUpdateParamsSchema(Schema):
    active = fields.Boolean(required=True)
    role = fields.String(required=True, validate=validate.Length(min=1, max=32))


class CampaignConfigureSchema(Schema):
    daily_budget = fields.Float(required=True, validate=validate.Range(min=0.0), allow_nan=False)
    daily_cap = fields.Float(required=True, validate=validate.Range(min=0.0), allow_nan=False)
    status = fields.String(required=True, validate=validate.OneOf(["active", "paused"]))
    currency = fields.String(required=True, validate=validate.Length(equal=3))


class ReasonSchema(Schema):
    reason = fields.String(validate=validate.Length(max=500), load_default=None)


class KillSwitchSchema(Schema):
    enabled = fields.Boolean(required=True)
    scope = fields.String(load_default="global", validate=validate.OneOf(["global", "link"]))
    reason = fields.String(validate=validate.Length(max=500), load_default=None)


@dataclass(frozen=True)
class ActionType:
    name: str
    description: str
    params_schema: type[Schema]
    target_kinds: tuple[str, ...] = field(default=())
    # One schema instance per type: building a marshmallow schema deep-copies its fields,
    # which costs more than validating a request (schemas are safe to reuse for load()).
    params_loader: Schema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params_loader", self.params_schema())


_REGISTRY: dict[str, ActionType] = {}


def register_action(action: ActionType) -> None:
    _REGISTRY[action.name] = action


def get_action_type(name: str) -> ActionType | None:
    return _REGISTRY.get(name)


def action_types() -> list[ActionType]:
    return sorted(_REGISTRY.values(), key=lambda a: a.name)


for _action in (
    ActionType("allocation.update", "Replace a smart link's traffic allocation", WeightsSchema, ("link",)),
    ActionType("budget.reallocate", "Move daily budget between campaigns", BudgetsSchema, ("account", "network")),
    ActionType(
        "link.configure", "Change a smart link's allocation algorithm or its parameters", LinkConfigureSchema, ("link",)
    ),
    ActionType(
        "link.commission",
        "Change the affiliate's share (commission rate) of a smart link's revenue",
        LinkCommissionSchema,
        ("link",),
    ),
    ActionType(
        "user.update",
        "Activate or deactivate a user, or change a staff user's role",
        UserUpdateParamsSchema,
        ("user",),
    ),
    ActionType(
        "campaign.configure",
        "Create a campaign or change its daily budget, daily cap or status",
        CampaignConfigureSchema,
        ("campaign",),
    ),
    ActionType("link.pause", "Stop routing a smart link's traffic to offers", ReasonSchema, ("link",)),
    ActionType("link.resume", "Resume a paused smart link", ReasonSchema, ("link",)),
    ActionType("offer.pause", "Stop sending traffic to an offer", ReasonSchema, ("offer",)),
    ActionType("offer.resume", "Resume a paused offer", ReasonSchema, ("offer",)),
    ActionType(
        "controls.kill_switch",
        "Turn the global or a link's kill switch on or off",
        KillSwitchSchema,
        ("system", "link"),
    ),
):
    register_action(_action)


class ActorSchema(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    kind = fields.String(required=True, validate=validate.OneOf(ACTOR_KINDS))
    roles = fields.List(fields.String(validate=validate.Length(max=32)), load_default=list)


class TargetSchema(Schema):
    kind = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))


class ActionSchema(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    actor = fields.Nested(ActorSchema, required=True)
    target = fields.Nested(TargetSchema, load_default=None)
    params = fields.Dict(keys=fields.String(), load_default=dict)


class DecisionRequestSchema(Schema):
    action = fields.Nested(ActionSchema, required=True)
    dry_run = fields.Boolean(load_default=False)
    state = fields.Dict(keys=fields.String(), load_default=None)

    @validates_schema
    def _known_type(self, data: dict[str, Any], **_: Any) -> None:
        action = data.get("action") or {}
        action_type = get_action_type(action.get("type", ""))
        if action_type is None:
            raise ValidationError(
                {
                    "action": {
                        "type": [
                            f"unknown action type {action.get('type')!r}; known: "
                            + ", ".join(a.name for a in action_types())
                        ]
                    }
                }
            )
        try:
            action["params"] = action_type.params_loader.load(action.get("params") or {})
        except ValidationError as exc:
            raise ValidationError({"action": {"params": exc.messages}}) from exc


# Capabilities outside server/governance register their action types when imported.
import billing.actions  # noqa: E402, F401, I001
