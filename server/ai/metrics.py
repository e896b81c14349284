"""The AI performance figures the dashboard and `GET /v1/ai/metrics` show: proposals a day and how
they ended, denial reasons, model latency percentiles, tokens and estimated cost, time spent in
degraded mode, and the measured effect of executed actions on the KPIs of the links they targeted
(the same window before and after execution)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.ai.models import AiCycle, AiModePeriod, AiProposal
from server.ai.services import EFFECT_WINDOW
from server.ai.snapshot import link_kpis

#: How proposals ended, grouped for the dashboard.
BUCKETS: dict[str, tuple[str, ...]] = {
    "allowed": ("executed", "undone", "failed", "shadow"),  # the policy let the AI act on its own
    "approved": ("approved",),  # a person approved (re-checked by the policy)
    "waiting or rejected": ("pending_approval", "rejected"),  # the policy asked for a person
    "denied": ("denied", "error"),  # the policy refused
    "invalid": ("invalid",),  # the validator refused
}
BUCKET_OF = {status: bucket for bucket, statuses in BUCKETS.items() for status in statuses}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Day:
    day: date
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    cycles: int = 0
    failed_cycles: int = 0
    tokens: int = 0
    cost: float = 0.0
    latencies: list[float] = field(default_factory=list)
    degraded_hours: float = 0.0

    @property
    def proposals(self) -> int:
        return sum(self.buckets.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "proposals": self.proposals,
            **{k.replace(" ", "_"): v for k, v in self.buckets.items()},
            "cycles": self.cycles,
            "failed_cycles": self.failed_cycles,
            "tokens": self.tokens,
            "cost": round(self.cost, 6),
            "latency_p50_ms": _round(percentile(self.latencies, 50)),
            "degraded_hours": round(self.degraded_hours, 3),
        }


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _overlap_hours(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    return max(0.0, (min(end, hi) - max(start, lo)).total_seconds() / 3600)


@dataclass
class Effect:
    proposal: AiProposal
    before: dict[str, Any]
    after: dict[str, Any]
    hours_measured: float

    def delta(self, metric: str) -> float | None:
        b, a = self.before.get(metric), self.after.get(metric)
        return round(a - b, 6) if isinstance(a, int | float) and isinstance(b, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal.id,
            "action_type": self.proposal.action_type,
            "target": f"{self.proposal.target_kind}:{self.proposal.target_id}",
            "executed_at": self.proposal.executed_at.isoformat() if self.proposal.executed_at else None,
            "links": list(self.proposal.kpi_links),
            "before": self.before,
            "after": self.after,
            "hours_measured": round(self.hours_measured, 2),
            "epc_change": self.delta("epc"),
            "cr_change": self.delta("cr"),
        }


def effects(session: Session, now: datetime, limit: int = 20) -> list[Effect]:
    """Executed actions with KPIs to compare: the window before execution against the same
    length after it (shorter while it is still being measured)."""
    rows = session.scalars(
        select(AiProposal)
        .where(AiProposal.executed.is_(True), AiProposal.kpi_before.is_not(None))
        .order_by(AiProposal.executed_at.desc())
        .limit(limit)
    )
    out = []
    for row in rows:
        if not row.kpi_links or row.executed_at is None or row.kpi_before is None:
            continue
        end = min(now, row.executed_at + EFFECT_WINDOW)
        after = link_kpis(session, list(row.kpi_links), row.executed_at, end + timedelta(hours=1))
        hours = (end - row.executed_at).total_seconds() / 3600
        out.append(Effect(row, dict(row.kpi_before), after, hours))
    return out


@dataclass
class Metrics:
    days: list[Day]
    totals: dict[str, int]
    shares: dict[str, float]
    denial_reasons: list[tuple[str, int]]
    latency: dict[str, float | None]
    tokens: int
    cost: float
    degraded_hours: float
    hours: float
    effects: list[Effect]

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": [d.as_dict() for d in self.days],
            "totals": self.totals,
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
            "denial_reasons": [{"code": c, "count": n} for c, n in self.denial_reasons],
            "latency_ms": {k: _round(v) for k, v in self.latency.items()},
            "tokens": self.tokens,
            "cost": round(self.cost, 6),
            "degraded_hours": round(self.degraded_hours, 3),
            "degraded_share": round(self.degraded_hours / self.hours, 4) if self.hours else 0.0,
            "effects": [e.as_dict() for e in self.effects],
        }


def compute(session: Session, now: datetime, days: int = 14) -> Metrics:
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    by_day = {first + timedelta(days=i): Day(first + timedelta(days=i)) for i in range(days)}
    reasons: Counter[str] = Counter()
    for created, status, row_reasons in session.execute(
        select(AiProposal.created_at, AiProposal.status, AiProposal.reasons).where(AiProposal.created_at >= start)
    ):
        day = by_day.get(created.astimezone(UTC).date())
        bucket = BUCKET_OF.get(status)
        if day is None or bucket is None:
            continue
        day.buckets[bucket] += 1
        if bucket in ("denied", "invalid"):
            for r in row_reasons or []:
                if isinstance(r, dict):
                    reasons[str(r.get("code"))] += 1
    latencies: list[float] = []
    for started, status, tokens_in, tokens_out, cost, latency, prompt in session.execute(
        select(
            AiCycle.started_at,
            AiCycle.status,
            AiCycle.input_tokens,
            AiCycle.output_tokens,
            AiCycle.cost,
            AiCycle.latency_ms,
            AiCycle.prompt_sha256,
        ).where(AiCycle.started_at >= start)
    ):
        day = by_day.get(started.astimezone(UTC).date())
        if day is None:
            continue
        day.cycles += 1
        day.failed_cycles += status in ("error", "malformed")
        day.tokens += tokens_in + tokens_out
        day.cost += cost
        if latency is not None and prompt is not None:
            day.latencies.append(latency)
            latencies.append(latency)
    for p_start, p_end in session.execute(
        select(AiModePeriod.started_at, AiModePeriod.ended_at).where(
            AiModePeriod.mode == "degraded", (AiModePeriod.ended_at.is_(None)) | (AiModePeriod.ended_at >= start)
        )
    ):
        for d, day in by_day.items():
            lo = datetime.combine(d, datetime.min.time(), tzinfo=UTC)
            day.degraded_hours += _overlap_hours(p_start, p_end or now, lo, min(lo + timedelta(days=1), now))
    totals = {bucket: sum(d.buckets[bucket] for d in by_day.values()) for bucket in BUCKETS}
    total = sum(totals.values())
    return Metrics(
        days=list(by_day.values()),
        totals=totals,
        shares={k: (v / total if total else 0.0) for k, v in totals.items()},
        denial_reasons=reasons.most_common(10),
        latency={"p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "p99": percentile(latencies, 99)},
        tokens=sum(d.tokens for d in by_day.values()),
        cost=sum(d.cost for d in by_day.values()),
        degraded_hours=sum(d.degraded_hours for d in by_day.values()),
        hours=(now - start).total_seconds() / 3600,
        effects=effects(session, now),
    )
