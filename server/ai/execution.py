"""What an allowed AI action does, what the policy is told about its target, and how it is undone.

Execution reuses the services that own each change: pausing and resuming go through
`set_link_status` / `set_offer_status` (so the `operations` policy decides the operation itself as
well, as for any other pause), parameters through `update_link` (the algorithm registry validates
them), budgets through `update_campaign` (which keeps a budget under its cap). When the inner
operation is refused, the executor raises: the gateway marks the AI decision `failed` and rolls its
savepoint back, and `reinsert_refused` puts the inner decision record back so that it is not lost.

Every executor records in `Execution.before` what it changed, which is what an undo restores."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from server.ai.alerts import raise_ai_alert
from server.ai.models import AiProposal
from server.db import utcnow
from server.governance.gateway import Actor, Gateway, Outcome, Target
from server.governance.models import Decision
from server.links.models import Campaign, Offer, SmartLink
from server.links.services import (
    get_campaign,
    get_link,
    offer_links,
    set_link_status,
    set_offer_status,
    update_campaign,
    update_link,
)

ALLOWED_OUTCOMES = ("allowed", "clamped", "pending_approval", "shadow", "failed")
PAUSED_BY_AI = ("executed", "approved")
Executor = Callable[[Session, dict[str, Any]], Any]


class OperationRefused(Exception):
    """The operation an AI action runs was itself refused by its own policy."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(
            f"{outcome.record.action_type} was {outcome.record.outcome}: "
            + "; ".join(str(r.get("code")) for r in outcome.reasons)
        )
        self.outcome = outcome


@dataclass
class Execution:
    before: dict[str, Any] | None = None
    refused: list[Decision] = field(default_factory=list)


def reinsert_refused(session: Session, execution: Execution) -> None:
    """Record again the inner decisions that the failed execution's savepoint rolled back."""
    columns = [c.key for c in Decision.__table__.columns]
    for record in execution.refused:
        session.execute(insert(Decision), [{c: getattr(record, c) for c in columns}])
    execution.refused.clear()


# -- what the policy is told ----------------------------------------------------------------
def ai_counts(session: Session, now: datetime) -> dict[str, int]:
    """Allowed (or parked) AI proposals per action type in the last hour."""
    rows = session.execute(
        select(AiProposal.action_type, func.count())
        .where(AiProposal.created_at >= now - timedelta(hours=1), AiProposal.outcome.in_(ALLOWED_OUTCOMES))
        .group_by(AiProposal.action_type)
    )
    return {str(t): int(n) for t, n in rows}


def _group(session: Session, kind: str, now: datetime) -> dict[str, int]:
    model: type[SmartLink] | type[Offer] = SmartLink if kind == "link" else Offer
    total = session.scalar(select(func.count()).select_from(model)) or 0
    active = session.scalar(select(func.count()).select_from(model).where(model.status == "active")) or 0
    paused = session.scalar(
        select(func.count(func.distinct(AiProposal.target_id))).where(
            AiProposal.action_type == f"ai.{kind}.pause",
            AiProposal.status.in_(PAUSED_BY_AI),
            AiProposal.executed_at >= now - timedelta(hours=24),
        )
    )
    return {"total": int(total), "active": int(active), "paused_by_ai_24h": int(paused or 0)}


def _target_status(session: Session, target: Target | None) -> str:
    row: SmartLink | Offer | None = None
    if target is not None and target.kind == "link":
        row = session.get(SmartLink, target.id)
    elif target is not None and target.kind == "offer":
        row = session.get(Offer, target.id)
    return row.status if row is not None else "missing"


def _campaign_state(session: Session, campaign_id: Any) -> dict[str, Any] | None:
    c = session.get(Campaign, campaign_id) if isinstance(campaign_id, str) else None
    if c is None:
        return None
    return {
        "budget": float(c.daily_budget),
        "daily_cap": float(c.daily_cap),
        "currency": c.currency,
        "status": c.status,
    }


def policy_state(
    session: Session,
    action_type: str,
    target: Target | None,
    params: Mapping[str, Any],
    now: datetime,
    *,
    evidence: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The facts the ai_supervisor policy needs about this action's target, read now."""
    state: dict[str, Any] = {}
    if action_type in ("ai.link.pause", "ai.link.resume", "ai.offer.pause", "ai.offer.resume"):
        kind = action_type.split(".")[1]
        state["target"] = {"status": _target_status(session, target)}
        state[f"{kind}s"] = _group(session, kind, now)
        state["evidence"] = {"anomalies": list(evidence or [])}
    elif action_type == "ai.algorithm.set_param" and target is not None:
        link = session.get(SmartLink, target.id)
        state["link"] = {"algorithm": link.algorithm, "params": dict(link.algorithm_params or {})} if link else {}
    elif action_type == "ai.budget.shift":
        campaigns = {
            str(params.get(side)): found
            for side in ("from_campaign", "to_campaign")
            if (found := _campaign_state(session, params.get(side))) is not None
        }
        state["campaigns"] = campaigns
    return state


def kpi_links(session: Session, action_type: str, target: Target | None, params: Mapping[str, Any]) -> list[str]:
    """The links whose KPIs the action is meant to move (for its measured effect)."""
    if target is None:
        return []
    if target.kind == "link":
        return [target.id]
    if target.kind == "offer":
        return [link.id for link in offer_links(session, target.id)]
    if action_type == "ai.budget.shift":
        ids = [params.get("from_campaign"), params.get("to_campaign")]
        return sorted({c.link_id for c in session.scalars(select(Campaign).where(Campaign.id.in_(ids))) if c.link_id})
    campaign = session.get(Campaign, target.id) if target.kind == "campaign" else None
    return [campaign.link_id] if campaign is not None and campaign.link_id else []


# -- executing ------------------------------------------------------------------------------
def _set_status(
    session: Session,
    gateway: Gateway,
    actor: Actor,
    kind: str,
    target_id: str,
    *,
    pause: bool,
    reason: str | None,
    execution: Execution,
) -> str:
    if kind == "link":
        link, outcome = set_link_status(session, gateway, actor, target_id, pause=pause, reason=reason)
    else:
        offer, outcome = set_offer_status(session, gateway, actor, target_id, pause=pause, reason=reason)
    if not outcome.executed:
        execution.refused.append(outcome.record)
        raise OperationRefused(outcome)
    return outcome.record.id


def _shift(session: Session, from_id: str, to_id: str, amount: Decimal) -> dict[str, Any]:
    source, sink = get_campaign(session, from_id), get_campaign(session, to_id)
    if source.daily_budget - amount < 0:
        raise ValueError(f"campaign {from_id} has a daily budget of {source.daily_budget}, less than {amount}")
    before = {
        "from": {"id": source.id, "budget": str(source.daily_budget)},
        "to": {"id": sink.id, "budget": str(sink.daily_budget)},
        "amount": str(amount),
    }
    update_campaign(session, source.id, {"daily_budget": source.daily_budget - amount})
    update_campaign(session, sink.id, {"daily_budget": sink.daily_budget + amount})
    return before


def _set_param(session: Session, link_id: str, param: str, value: Any) -> dict[str, Any]:
    link = get_link(session, link_id)
    current = dict(link.algorithm_params or {})
    before = {"algorithm": link.algorithm, "param": param, "value": current.get(param), "present": param in current}
    if value is None:
        current.pop(param, None)
    else:
        current[param] = value
    update_link(session, link_id, {"algorithm_params": current})
    return before


def executor(
    action_type: str,
    target: Target | None,
    actor: Actor,
    gateway: Gateway,
    execution: Execution,
    *,
    proposal_id: str,
) -> Executor:
    """What running `action_type` does, as the gateway's executor (params as decided)."""

    def run(session: Session, params: dict[str, Any]) -> Any:
        reason = params.get("reason") or f"AI proposal {proposal_id}"
        if action_type in ("ai.link.pause", "ai.link.resume", "ai.offer.pause", "ai.offer.resume"):
            assert target is not None
            kind, verb = action_type.split(".")[1:]
            execution.before = {"status": _target_status(session, target)}
            return _set_status(
                session, gateway, actor, kind, target.id, pause=verb == "pause", reason=reason, execution=execution
            )
        if action_type == "ai.algorithm.set_param":
            assert target is not None
            execution.before = _set_param(session, target.id, params["param"], params["value"])
            return {"param": params["param"], "value": params["value"]}
        if action_type == "ai.budget.shift":
            amount = Decimal(str(round(float(params["amount"]), 4)))
            execution.before = _shift(session, params["from_campaign"], params["to_campaign"], amount)
            return execution.before
        if action_type == "ai.alert":
            digest = hashlib.sha256(str(params["title"]).encode()).hexdigest()[:16]
            return raise_ai_alert(
                session,
                "ai_supervisor",
                f"{digest}:{utcnow().date().isoformat()}",
                f"AI supervisor: {params['title']}",
                str(params.get("detail") or params["title"]),
                severity=params["severity"],
                data={"proposal_id": proposal_id, "target": target.__dict__ if target else None},
            )
        if action_type == "ai.review.request":
            return {"reviewed_by": actor.id}
        raise ValueError(f"no executor for {action_type}")

    return run


def undo_executor(proposal: AiProposal, actor: Actor, gateway: Gateway, execution: Execution) -> Executor:
    """What undoing an executed proposal does: the inverse change, through the same services."""

    def run(session: Session, params: dict[str, Any]) -> Any:
        before = proposal.before or {}
        reason = params.get("reason") or f"undo of AI proposal {proposal.id}"
        target_id = proposal.target_id or ""
        if proposal.action_type in ("ai.link.pause", "ai.link.resume", "ai.offer.pause", "ai.offer.resume"):
            kind, verb = proposal.action_type.split(".")[1:]
            return _set_status(
                session, gateway, actor, kind, target_id, pause=verb == "resume", reason=reason, execution=execution
            )
        if proposal.action_type == "ai.algorithm.set_param":
            value = before.get("value") if before.get("present") else None
            return _set_param(session, target_id, str(before["param"]), value)
        if proposal.action_type == "ai.budget.shift":
            return _shift(session, before["to"]["id"], before["from"]["id"], Decimal(before["amount"]))
        raise ValueError(f"{proposal.action_type} cannot be undone")

    return run
