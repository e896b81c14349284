"""Reads for the AI pages and API: the supervisor's status, the feed of proposals (newest first,
keyset-paginated), one proposal or cycle with what was sent to the model and what it answered."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from server.ai.alerts import recent_ai_alerts
from server.ai.models import AiCycle, AiPrompt, AiProposal
from server.ai.monitor import tokens_today
from server.ai.state import DEGRADED_REASONS, current_period, load_state
from server.config import Settings
from server.errors import Problem


def status(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    state = load_state(session)
    period = current_period(session)
    last = session.scalars(select(AiCycle).order_by(AiCycle.id.desc()).limit(1)).first()
    waiting = session.scalar(
        select(func.count()).select_from(AiProposal).where(AiProposal.status == "pending_approval")
    )
    mode = period.mode if period is not None else ("disabled" if not state.enabled else "none")
    return {
        "enabled": state.enabled,
        "forced_degraded": state.forced_degraded,
        "mode": mode,
        "mode_reason": period.reason if period is not None else None,
        "mode_reason_text": DEGRADED_REASONS.get(period.reason) if period is not None else None,
        "mode_since": period.started_at.isoformat() if period is not None else None,
        "control": {
            "by": state.control_by,
            "at": state.control_at.isoformat() if state.control_at else None,
            "reason": state.control_reason,
        },
        "circuit": {
            "state": state.circuit_state,
            "consecutive_failures": state.consecutive_failures,
            "opened_at": state.circuit_opened_at.isoformat() if state.circuit_opened_at else None,
            "last_error": state.last_error,
        },
        "model": settings.openai_model,
        "api_key_configured": bool(settings.openai_api_key),
        "interval_seconds": settings.ai_supervisor_interval_seconds,
        "last_cycle": cycle_body(last) if last is not None else None,
        "pending_approvals": int(waiting or 0),
        "tokens_today": tokens_today(session, now),
        "daily_token_budget": settings.ai_daily_token_budget,
        "alerts": [
            {
                "id": a.id,
                "kind": a.kind,
                "severity": a.severity,
                "title": a.title,
                "last_seen_at": a.last_seen_at.isoformat(),
            }
            for a in recent_ai_alerts(session, 5)
        ],
    }


@dataclass(frozen=True)
class ProposalFilter:
    status: str | None = None
    mode: str | None = None
    action_type: str | None = None
    limit: int = 50
    cursor: str | None = None


def _encode(row: AiProposal) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ident = raw.split("|", 1)
        return datetime.fromisoformat(stamp), ident
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Problem(400, "Invalid cursor", "the cursor is not one this API returned") from exc


def list_proposals(session: Session, flt: ProposalFilter) -> tuple[list[AiProposal], str | None]:
    query = select(AiProposal)
    if flt.status:
        query = query.where(AiProposal.status == flt.status)
    if flt.mode:
        query = query.where(AiProposal.mode == flt.mode)
    if flt.action_type:
        query = query.where(AiProposal.action_type == flt.action_type)
    if flt.cursor:
        stamp, ident = _decode(flt.cursor)
        query = query.where(
            or_(AiProposal.created_at < stamp, and_(AiProposal.created_at == stamp, AiProposal.id < ident))
        )
    rows = list(
        session.scalars(query.order_by(AiProposal.created_at.desc(), AiProposal.id.desc()).limit(flt.limit + 1))
    )
    more = len(rows) > flt.limit
    rows = rows[: flt.limit]
    return rows, _encode(rows[-1]) if more and rows else None


def proposal_body(row: AiProposal) -> dict[str, Any]:
    return {
        "id": row.id,
        "cycle_id": row.cycle_id,
        "created_at": row.created_at.isoformat(),
        "source": row.source,
        "mode": row.mode,
        "action_type": row.action_type,
        "proposed_type": row.proposed_type,
        "target": {"kind": row.target_kind, "id": row.target_id} if row.target_kind else None,
        "params": row.params,
        "rationale": row.rationale,
        "validation_errors": row.validation_errors,
        "status": row.status,
        "decision_id": row.decision_id,
        "outcome": row.outcome,
        "reasons": row.reasons,
        "executed": row.executed,
        "executed_at": row.executed_at.isoformat() if row.executed_at else None,
        "before": row.before,
        "review": {
            "by": row.reviewed_by,
            "at": row.reviewed_at.isoformat() if row.reviewed_at else None,
            "reason": row.review_reason,
            "decision_id": row.approval_decision_id,
        },
        "undo": {
            "by": row.undone_by,
            "at": row.undone_at.isoformat() if row.undone_at else None,
            "reason": row.undo_reason,
            "decision_id": row.undo_decision_id,
        },
    }


def cycle_body(cycle: AiCycle) -> dict[str, Any]:
    return {
        "id": cycle.id,
        "started_at": cycle.started_at.isoformat(),
        "trigger": cycle.trigger,
        "mode": cycle.mode,
        "degraded_reason": cycle.degraded_reason,
        "status": cycle.status,
        "error_kind": cycle.error_kind,
        "error": cycle.error,
        "model": cycle.model,
        "prompt_sha256": cycle.prompt_sha256,
        "attempts": cycle.attempts,
        "input_tokens": cycle.input_tokens,
        "output_tokens": cycle.output_tokens,
        "latency_ms": round(cycle.latency_ms, 1) if cycle.latency_ms is not None else None,
        "cost": round(cycle.cost, 6),
        "proposals": cycle.proposals,
    }


def get_cycle(session: Session, cycle_id: int) -> AiCycle:
    cycle = session.get(AiCycle, cycle_id)
    if cycle is None:
        raise Problem(404, "Not Found", f"no AI cycle with id {cycle_id}")
    return cycle


def cycle_detail(session: Session, cycle: AiCycle) -> dict[str, Any]:
    prompt = session.get(AiPrompt, cycle.prompt_sha256) if cycle.prompt_sha256 else None
    proposals = session.scalars(select(AiProposal).where(AiProposal.cycle_id == cycle.id).order_by(AiProposal.seq))
    return {
        **cycle_body(cycle),
        "prompt": prompt.text if prompt else None,
        "response": cycle.response,
        "proposal_items": [proposal_body(p) for p in proposals],
    }


def list_cycles(session: Session, limit: int = 50) -> list[AiCycle]:
    return list(session.scalars(select(AiCycle).order_by(AiCycle.id.desc()).limit(limit)))
