"""Alerts on how the supervisor behaves: its error rate (failed or unusable model answers), its
denial rate (proposals the validator or the policy refused) and its token spend against the daily
budget. Each alert is deduplicated per day: crossing again the same day only counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.ai.alerts import raise_ai_alert
from server.ai.models import AiCycle, AiProposal
from server.ai.state import current_period

MIN_MODEL_CYCLES = 3  # before an error rate is judged
MIN_PROPOSALS = 10  # before a denial rate is judged
REFUSED = ("invalid", "denied", "error")


@dataclass(frozen=True)
class Limits:
    error_rate: float = 0.5
    denial_rate: float = 0.5
    daily_token_budget: int = 2_000_000


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)


def tokens_today(session: Session, now: datetime) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(AiCycle.input_tokens + AiCycle.output_tokens), 0)).where(
            AiCycle.started_at >= day_start(now)
        )
    )
    return int(total or 0)


def error_rate(session: Session, since: datetime) -> tuple[int, int]:
    """(model cycles, failed or unusable ones) since `since`."""
    statuses = list(session.scalars(select(AiCycle.status).where(AiCycle.started_at >= since, AiCycle.mode == "model")))
    return len(statuses), sum(1 for s in statuses if s in ("error", "malformed"))


def denial_rate(session: Session, now: datetime) -> tuple[int, int]:
    """(proposals, refused ones) in the last 24 hours."""
    rows = session.execute(
        select(AiProposal.status, func.count())
        .where(AiProposal.created_at >= now - timedelta(hours=24))
        .group_by(AiProposal.status)
    ).all()
    total = sum(int(n) for _, n in rows)
    return total, sum(int(n) for s, n in rows if s in REFUSED)


def check(session: Session, now: datetime, limits: Limits) -> list[str]:
    """Raise the alerts whose threshold is crossed; returns their ids."""
    day = now.astimezone(UTC).date().isoformat()
    raised: list[str] = []
    period = current_period(session)
    # In degraded mode the circuit (or an operator) already said the model is out: one alert. And
    # failures from before the current model period were covered by that alert.
    if period is None or period.mode == "model":
        since = now - timedelta(hours=1)
        cycles, failed = error_rate(session, max(since, period.started_at) if period is not None else since)
        if cycles >= MIN_MODEL_CYCLES and failed / cycles >= limits.error_rate:
            raised.append(
                raise_ai_alert(
                    session,
                    "ai_error_rate",
                    day,
                    "AI supervisor error rate above threshold",
                    f"{failed} of the last {cycles} model calls failed or gave unusable answers "
                    f"(threshold {limits.error_rate:.0%}).",
                    data={"cycles": cycles, "failed": failed},
                )
            )
    total, refused = denial_rate(session, now)
    if total >= MIN_PROPOSALS and refused / total >= limits.denial_rate:
        raised.append(
            raise_ai_alert(
                session,
                "ai_denial_rate",
                day,
                "AI supervisor denial rate above threshold",
                f"{refused} of its {total} proposals in the last 24 h were refused by the validator or the policy "
                f"(threshold {limits.denial_rate:.0%}). Review them on /ai.",
                data={"proposals": total, "refused": refused},
            )
        )
    spent = tokens_today(session, now)
    if limits.daily_token_budget > 0 and spent >= limits.daily_token_budget:  # 0: the model is meant to be off
        raised.append(
            raise_ai_alert(
                session,
                "ai_token_budget",
                day,
                "AI supervisor token budget spent",
                f"{spent} tokens used today, budget {limits.daily_token_budget}: the supervisor runs in degraded "
                "mode until tomorrow (UTC).",
                data={"tokens": spent, "budget": limits.daily_token_budget},
            )
        )
    return raised
