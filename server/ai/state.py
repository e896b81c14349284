"""The supervisor's shared state: its switches (enabled, forced degraded mode), its circuit
breaker and the mode periods, all in the database so that the web workers, the scheduler and the
CLI agree. Entering degraded mode raises an alert, and so does leaving it, once per period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.ai.alerts import raise_ai_alert
from server.ai.breaker import Breaker
from server.ai.models import AiModePeriod, AiSupervisorState

DEGRADED_REASONS = {
    "forced": "an operator forced degraded mode",
    "no_api_key": "no OpenAI API key is configured",
    "circuit_open": "the model failed repeatedly and the circuit breaker is open",
    "token_budget": "today's token budget is spent",
}


def load_state(session: Session, *, for_update: bool = False) -> AiSupervisorState:
    """The single state row, created on first use (safely when two processes race)."""
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(AiSupervisorState).values(id=1).on_conflict_do_nothing(index_elements=["id"]))
    query = select(AiSupervisorState).where(AiSupervisorState.id == 1).execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).one()
    return row


def breaker_of(row: AiSupervisorState) -> Breaker:
    return Breaker(state=row.circuit_state, failures=row.consecutive_failures, opened_at=row.circuit_opened_at)


def store_breaker(row: AiSupervisorState, breaker: Breaker, error: str | None = None) -> None:
    row.circuit_state = breaker.state
    row.consecutive_failures = breaker.failures
    row.circuit_opened_at = breaker.opened_at
    if error is not None:
        row.last_error = error[:2000]


def set_controls(
    session: Session,
    *,
    by: str,
    now: datetime,
    enabled: bool | None = None,
    forced_degraded: bool | None = None,
    reason: str | None = None,
) -> AiSupervisorState:
    """Switch the supervisor on or off, or force degraded mode; recorded with who and why. Not a
    governed action: stopping the AI must work even when OPA does not (and every AI action stays
    governed while it runs). Disabling closes the current mode period."""
    row = load_state(session, for_update=True)
    if enabled is not None:
        row.enabled = enabled
        if not enabled:
            enter_mode(session, "disabled", "disabled", now, detail=f"by {by}: {reason or 'no reason given'}")
    if forced_degraded is not None:
        row.forced_degraded = forced_degraded
    row.control_by = by[:128]
    row.control_reason = (reason or "")[:1000] or None
    row.control_at = now
    session.flush()
    return row


def current_period(session: Session) -> AiModePeriod | None:
    return session.scalars(
        select(AiModePeriod).where(AiModePeriod.ended_at.is_(None)).order_by(AiModePeriod.id.desc()).limit(1)
    ).first()


@dataclass(frozen=True)
class ModeChange:
    period: AiModePeriod
    changed: bool
    alert_id: str | None = None


def enter_mode(session: Session, mode: str, reason: str, now: datetime, *, detail: str | None = None) -> ModeChange:
    """Make `mode` the mode in force. A change closes the open period, opens a new one and, when it
    enters or leaves degraded mode, raises one alert (deduplicated on the new period)."""
    period = current_period(session)
    if period is not None and period.mode == mode:
        return ModeChange(period, changed=False)
    previous = period.mode if period is not None else None
    if period is not None:
        period.ended_at = max(now, period.started_at)
    new = AiModePeriod(mode=mode, reason=reason, started_at=now)
    session.add(new)
    session.flush()
    alert_id: str | None = None
    if mode == "degraded":
        why = DEGRADED_REASONS.get(reason, reason)
        alert_id = raise_ai_alert(
            session,
            "ai_degraded",
            f"period:{new.id}",
            "AI supervisor entered degraded mode",
            f"The AI supervisor now runs its rule-based supervisor: {why}. Optimisation continues; "
            f"see docs/runbooks/ai-incidents.md.{' ' + detail if detail else ''}",
            severity="warning",
            data={"reason": reason, "since": now.isoformat(), "previous_mode": previous},
        )
    elif previous == "degraded" and mode == "model":
        alert_id = raise_ai_alert(
            session,
            "ai_recovered",
            f"period:{new.id}",
            "AI supervisor left degraded mode",
            f"The AI supervisor asks the model again since {now.isoformat()}.",
            severity="info",
            data={"mode": mode, "since": now.isoformat()},
        )
    new.alert_id = alert_id
    session.flush()
    return ModeChange(new, changed=True, alert_id=alert_id)
