"""Use cases of the governance capability: decide a service's action, list decisions, flip a
kill switch. Views call these; they take their dependencies as arguments."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from server.db import utcnow
from server.errors import Problem
from server.governance.gateway import Action, Actor, AuthzRequest, Gateway, Outcome, Resolution, Target
from server.governance.models import Control, Decision


def action_from_payload(payload: Mapping[str, Any]) -> Action:
    """An Action from a validated DecisionRequestSchema['action'] payload."""
    actor = payload["actor"]
    target = payload.get("target")
    return Action(
        type=payload["type"],
        actor=Actor(id=actor["id"], kind=actor["kind"], roles=tuple(actor.get("roles") or ())),
        target=Target(kind=target["kind"], id=target["id"]) if target else None,
        params=payload.get("params") or {},
    )


def caller_action(payload: Mapping[str, Any], caller: Actor) -> Action:
    """The action a service proposes (a validated DecisionRequestSchema payload). The actor is the
    caller's claim about who proposes it (an algorithm, say): it is recorded, but it carries no
    privileges. Its roles are dropped, and a caller may not claim to be the system or another
    person (a 400 Problem); permissions come from the authenticated caller."""
    action = action_from_payload(payload["action"])
    if action.actor.kind in ("system", "user") and action.actor.id != caller.id:
        raise Problem(
            400,
            "Validation failed",
            "an API caller may not act as the system or as another user",
            errors={"action": {"actor": {"kind": [f"{action.actor.kind!r} is reserved for the server's own actions"]}}},
        )
    return replace(action, actor=replace(action.actor, roles=()))


def decide_for_caller(
    session: Session,
    gateway: Gateway,
    payload: Mapping[str, Any],
    caller: Actor,
    request: AuthzRequest,
) -> Outcome:
    """Decide a service's action (authorised in the same OPA query). The service executes the
    action itself, so the gateway only records; clamps are applied and returned. The action is
    `caller_action`'s."""
    return gateway.decide(
        session,
        caller_action(payload, caller),
        state=payload.get("state"),
        caller=caller,
        dry_run=bool(payload.get("dry_run")),
        request=request,
    )


def outcome_body(outcome: Outcome) -> dict[str, Any]:
    return {
        "decision_id": outcome.decision_id,
        "allow": outcome.allow,
        "outcome": outcome.record.outcome,
        "reasons": outcome.reasons,
        "obligations": outcome.obligations,
        "params": outcome.params,
        "policy_revision": outcome.revision,
        "dry_run": outcome.record.dry_run,
    }


def outcome_fields(fields: Mapping[str, Any], resolution: Resolution) -> dict[str, Any]:
    """`outcome_body` of a decision recorded from its column values (the direct path)."""
    return {
        "decision_id": fields["id"],
        "allow": resolution.allow,
        "outcome": fields["outcome"],
        "reasons": resolution.reasons,
        "obligations": resolution.obligations,
        "params": resolution.params,
        "policy_revision": resolution.revision,
        "dry_run": fields["dry_run"],
    }


@dataclass(frozen=True)
class DecisionFilter:
    allowed: bool | None = None
    action_type: str | None = None
    actor: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def encode_cursor(decision: Decision) -> str:
    raw = f"{decision.created_at.isoformat()}|{decision.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, decision_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), decision_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Problem(400, "Invalid cursor", "the cursor is not one this API returned") from exc


def list_decisions(session: Session, flt: DecisionFilter) -> tuple[list[Decision], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Decision)
    if flt.allowed is not None:
        query = query.where(Decision.allow.is_(flt.allowed))
    if flt.action_type:
        query = query.where(Decision.action_type == flt.action_type)
    if flt.actor:
        query = query.where(Decision.actor_id == flt.actor)
    if flt.outcome:
        query = query.where(Decision.outcome == flt.outcome)
    if flt.since:
        query = query.where(Decision.created_at >= flt.since)
    if flt.until:
        query = query.where(Decision.created_at < flt.until)
    if flt.cursor:
        stamp, last_id = _decode_cursor(flt.cursor)
        query = query.where(or_(Decision.created_at < stamp, and_(Decision.created_at == stamp, Decision.id < last_id)))
    rows = list(session.scalars(query.order_by(Decision.created_at.desc(), Decision.id.desc()).limit(flt.limit + 1)))
    next_cursor = encode_cursor(rows[flt.limit - 1]) if len(rows) > flt.limit else None
    return rows[: flt.limit], next_cursor


def get_decision(session: Session, decision_id: str) -> Decision:
    decision = session.get(Decision, decision_id)
    if decision is None:
        raise Problem(404, "Not Found", f"no decision with id {decision_id}")
    return decision


def kill_switch_state(session: Session) -> dict[str, Any]:
    rows = session.scalars(select(Control).where(Control.key.like("kill_switch:%"))).all()
    return {
        "global": next((r.enabled for r in rows if r.key == "kill_switch:global"), False),
        "targets": [
            {
                "key": r.key,
                "enabled": r.enabled,
                "reason": r.reason,
                "updated_by": r.updated_by,
                "updated_at": r.updated_at.isoformat(),
            }
            for r in rows
        ],
    }


def set_kill_switch(
    session: Session,
    gateway: Gateway,
    actor: Actor,
    *,
    enabled: bool,
    scope: str = "global",
    target_id: str | None = None,
    reason: str | None = None,
) -> Outcome:
    """Turn a kill switch on or off, itself a governed action (`controls.kill_switch`)."""
    if scope == "link" and not target_id:
        raise Problem(
            400,
            "Validation failed",
            "a link kill switch needs the link id",
            errors={"target_id": ["required when scope is link"]},
        )
    key = "kill_switch:global" if scope == "global" else f"kill_switch:link:{target_id}"
    target = Target(kind="system", id="global") if scope == "global" else Target(kind="link", id=str(target_id))

    def flip(db: Session, params: dict[str, Any]) -> bool:
        control = db.get(Control, key) or Control(key=key)
        control.enabled = bool(params["enabled"])
        control.reason = params.get("reason")
        control.updated_by = actor.id
        control.updated_at = utcnow()
        db.add(control)
        db.flush()
        return control.enabled

    return gateway.decide(
        session,
        Action(
            type="controls.kill_switch",
            actor=actor,
            target=target,
            params={"enabled": enabled, "scope": scope, "reason": reason},
        ),
        caller=actor,
        execute=flip,
    )
