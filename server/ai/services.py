"""Every proposal, from the model or the rules, goes through the governance gateway here, and so do
a person's approval and undo. One function per use case; each takes the caller's Session and never
commits (the caller's unit of work does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from server.ai.actions import AI_ACTOR_ID, INVALID_TYPE, UNDOABLE_TYPES
from server.ai.execution import Execution, ai_counts, executor, kpi_links, policy_state, reinsert_refused, undo_executor
from server.ai.models import AiProposal
from server.ai.snapshot import link_kpis
from server.ai.validation import Proposal, Rejected
from server.db import new_id, utcnow
from server.errors import Problem
from server.governance.gateway import Action, Actor, Gateway, Outcome, Target

AI_ACTOR = Actor(id=AI_ACTOR_ID, kind="ai")
EFFECT_WINDOW = timedelta(hours=24)
STATUS_OF_OUTCOME = {
    "denied": "denied",
    "error": "error",
    "pending_approval": "pending_approval",
    "shadow": "shadow",
    "failed": "failed",
    "allowed": "executed",
    "clamped": "executed",
}


@dataclass(frozen=True)
class Origin:
    """Where a proposal comes from: its cycle, its place in the answer, the source and the mode."""

    cycle_id: int
    seq: int
    source: str  # model | rules
    mode: str  # model | degraded


def _target_of(row: AiProposal) -> Target | None:
    return Target(kind=row.target_kind, id=row.target_id) if row.target_kind and row.target_id else None


def _outcome_reasons(outcome: Outcome) -> list[dict[str, Any]]:
    if outcome.reasons:
        return list(outcome.reasons)
    if outcome.error:
        return [{"code": "execution_failed", "policy": "ai_supervisor", "message": outcome.error[:500]}]
    why = (outcome.obligations.get("require_approval") or {}).get("why")
    return (
        [{"code": "needs_approval", "policy": "ai_supervisor", "message": w} for w in why]
        if isinstance(why, list)
        else []
    )


def _mark_executed(session: Session, row: AiProposal, execution: Execution, now: datetime) -> None:
    row.executed = True
    row.executed_at = now
    row.before = execution.before
    row.kpi_links = kpi_links(session, row.action_type, _target_of(row), row.params)
    row.kpi_before = link_kpis(session, row.kpi_links, now - EFFECT_WINDOW, now) if row.kpi_links else None


def decide_proposal(
    session: Session,
    gateway: Gateway,
    item: Proposal | Rejected,
    origin: Origin,
    now: datetime,
    *,
    evidence: list[dict[str, Any]] | None = None,
) -> AiProposal:
    """Record one proposal and its decision; execute it when the policy allows without a person."""
    row = AiProposal(
        id=new_id("aip"),
        cycle_id=origin.cycle_id,
        seq=origin.seq,
        created_at=now,
        source=origin.source,
        mode=origin.mode,
        target_kind=item.target.kind if item.target else None,
        target_id=item.target.id if item.target else None,
        rationale=item.rationale,
        raw=item.raw,
        reasons=[],
        kpi_links=[],
        executed=False,
    )
    if isinstance(item, Rejected):
        row.action_type = INVALID_TYPE
        row.proposed_type = item.proposed_type[:64]
        row.params = {}
        row.validation_errors = item.errors
        errors = [e[:300] for e in item.errors[:10]]
        outcome = gateway.decide(
            session,
            Action(INVALID_TYPE, AI_ACTOR, {"proposed_type": row.proposed_type, "errors": errors}, item.target),
            caller=AI_ACTOR,
            note=f"AI proposal {row.id} refused by the validator",
        )
        row.status = "invalid"
    else:
        row.action_type = row.proposed_type = item.action_type
        row.params = dict(item.params)
        row.validation_errors = []
        state = policy_state(session, item.action_type, item.target, item.params, now, evidence=evidence)
        state["ai_counts"] = {**{item.action_type: 0}, **ai_counts(session, now)}
        execution = Execution()
        outcome = gateway.decide(
            session,
            Action(item.action_type, AI_ACTOR, item.params, item.target),
            state=state,
            caller=AI_ACTOR,
            execute=executor(item.action_type, item.target, AI_ACTOR, gateway, execution, proposal_id=row.id),
            note=f"AI proposal {row.id} ({origin.source}, {origin.mode} mode)",
        )
        if outcome.record.outcome == "failed":
            reinsert_refused(session, execution)
        row.status = STATUS_OF_OUTCOME.get(outcome.record.outcome, "denied")
        if outcome.executed:
            _mark_executed(session, row, execution, now)
    row.decision_id = outcome.decision_id
    row.outcome = outcome.record.outcome
    row.reasons = _outcome_reasons(outcome)
    session.add(row)
    session.flush()
    return row


def get_proposal(session: Session, proposal_id: str) -> AiProposal:
    row = session.get(AiProposal, proposal_id)
    if row is None:
        raise Problem(404, "Not Found", f"no AI proposal with id {proposal_id}")
    return row


def approve_proposal(
    session: Session, gateway: Gateway, proposal_id: str, person: Actor, reason: str | None = None
) -> tuple[AiProposal, Outcome]:
    """A person approves a proposal that waits for one: the policy judges it again, now, with the
    person as the actor; when allowed it executes (as the person)."""
    row = get_proposal(session, proposal_id)
    if row.status != "pending_approval":
        raise Problem(409, "Conflict", f"AI proposal {proposal_id} is {row.status}, not waiting for approval")
    now = utcnow()
    target = _target_of(row)
    state = policy_state(session, row.action_type, target, row.params, now)
    state["approval"] = {"proposal_id": row.id, "proposed_by": AI_ACTOR_ID, "proposed_at": row.created_at.isoformat()}
    execution = Execution()
    outcome = gateway.decide(
        session,
        Action(row.action_type, person, dict(row.params), target),
        state=state,
        caller=person,
        execute=executor(row.action_type, target, person, gateway, execution, proposal_id=row.id),
        note=f"approval of AI proposal {row.id}" + (f": {reason}" if reason else ""),
    )
    row.approval_decision_id = outcome.decision_id
    if outcome.record.outcome == "failed":
        reinsert_refused(session, execution)
    if outcome.executed or outcome.record.outcome in ("failed", "shadow"):
        row.status = "approved" if outcome.executed else outcome.record.outcome
        row.reviewed_by, row.reviewed_at, row.review_reason = person.id, now, reason
        if outcome.executed:
            _mark_executed(session, row, execution, now)
    session.flush()
    return row, outcome


def reject_proposal(session: Session, proposal_id: str, person: Actor, reason: str) -> AiProposal:
    """A person rejects a waiting proposal; nothing runs, so there is nothing to decide."""
    if not reason.strip():
        raise Problem(400, "Validation failed", "say why you reject it", errors={"reason": ["required to reject"]})
    row = get_proposal(session, proposal_id)
    if row.status != "pending_approval":
        raise Problem(409, "Conflict", f"AI proposal {proposal_id} is {row.status}, not waiting for approval")
    row.status = "rejected"
    row.reviewed_by, row.reviewed_at, row.review_reason = person.id, utcnow(), reason.strip()[:1000]
    session.flush()
    return row


def undo_proposal(
    session: Session, gateway: Gateway, proposal_id: str, person: Actor, reason: str | None = None
) -> tuple[AiProposal, Outcome]:
    """A person undoes an executed AI action: an `ai.undo` decision with the person as the actor;
    when allowed the inverse change runs through the same services."""
    row = get_proposal(session, proposal_id)
    if row.action_type not in UNDOABLE_TYPES or row.status not in ("executed", "approved"):
        raise Problem(409, "Conflict", f"AI proposal {proposal_id} ({row.action_type}, {row.status}) cannot be undone")
    now = utcnow()
    age = (now - (row.executed_at or row.created_at)).total_seconds() / 3600
    execution = Execution()
    outcome = gateway.decide(
        session,
        Action("ai.undo", person, {"proposal_id": row.id, "reason": reason}, _target_of(row)),
        state={
            "proposal": {"id": row.id, "action_type": row.action_type, "status": row.status, "age_hours": round(age, 3)}
        },
        caller=person,
        execute=undo_executor(row, person, gateway, execution),
        note=f"undo of AI proposal {row.id}" + (f": {reason}" if reason else ""),
    )
    row.undo_decision_id = outcome.decision_id
    if outcome.record.outcome == "failed":
        reinsert_refused(session, execution)
    if outcome.executed:
        row.status = "undone"
        row.undone_by, row.undone_at, row.undo_reason = person.id, now, reason
    session.flush()
    return row, outcome
