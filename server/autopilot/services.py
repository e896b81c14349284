"""Optimisation cycles. `optimize_link` turns a link's evidence into an allocation proposal and
sends it through `approve_allocation` (the only way an allocation becomes current);
`run_budget_arbitrage` proposes campaign budgets and sends a `budget.reallocate` action through
the gateway. Both record what happened in `autopilot_runs`, in the caller's transaction.

Evidence: the cumulative hourly `arm_stats` counters of the link (human clicks, converting
clicks, revenue). Algorithms that learn across cycles (Thompson sampling's discount `gamma`,
the traffic optimiser's smoothing) get back the state of their previous cycle on this link, kept
in the run row whatever the outcome: a late conversion, booked in its click's hour bucket, still
raises the cumulative counters and counts as new evidence in the next cycle."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from algorithms import registry
from algorithms.base import AllocationAlgorithm, ArmStats, BudgetAlgorithm, CampaignStats
from algorithms.params import InvalidParameters
from server.autopilot.models import AutopilotRun
from server.db import Database, json_safe
from server.governance.gateway import Action, Actor, Gateway, Outcome, Target
from server.links.allocations import approve_allocation, arm_evidence, arm_ids, current_weights
from server.links.models import Campaign, CampaignCost, Conversion, SmartLink

log = logging.getLogger(__name__)

BUDGET_ALGORITHM = "budget_arbitrage"
ROI_WINDOW_DAYS = 7


def autopilot_actor(link: SmartLink) -> Actor:
    """The actor of a link's automatic cycles: one per link and algorithm, so that the safety
    policy's per-actor rate limits bound each link's changes (not the fleet's)."""
    return Actor(id=f"algo:{link.algorithm}:{link.id}", kind="algorithm")


BUDGET_ACTOR = Actor(id=f"algo:{BUDGET_ALGORITHM}", kind="algorithm")


def _reason(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "policy": "autopilot", "message": message}


def finite_json(value: Any) -> Any:
    """JSON-safe, with non-finite floats (which PostgreSQL's JSON refuses) turned into null."""
    value = json_safe(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


@dataclass
class CycleResult:
    """What one cycle did, as the API, the CLI and the page show it."""

    run: AutopilotRun
    outcome: str
    reasons: list[dict[str, Any]]
    decision_id: str | None
    proposed: dict[str, float]
    approved: dict[str, float] | None
    allocation_id: int | None = None
    error_code: str | None = None  # the decision's OPA failure code, when it failed closed

    @property
    def allow(self) -> bool:
        return self.outcome in ("allowed", "clamped")

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.id,
            "kind": self.run.kind,
            "scope": self.run.scope,
            "link_id": self.run.link_id,
            "algorithm": self.run.algorithm,
            "outcome": self.outcome,
            "allow": self.allow,
            "reasons": self.reasons,
            "decision_id": self.decision_id,
            "proposed": self.proposed,
            "approved": self.approved,
            "allocation_id": self.allocation_id,
            "started_at": self.run.started_at.isoformat(),
        }


def previous_state(session: Session, scope: str, algorithm: str) -> dict[str, Any] | None:
    """The algorithm state of the latest cycle on `scope` with `algorithm`."""
    state = session.scalar(
        select(AutopilotRun.algorithm_state)
        .where(AutopilotRun.scope == scope, AutopilotRun.algorithm == algorithm, AutopilotRun.outcome != "error")
        .order_by(AutopilotRun.id.desc())
        .limit(1)
    )
    return state if isinstance(state, dict) else None


def _outcome_reasons(outcome: Outcome) -> list[dict[str, Any]]:
    """The deny reasons, or for a clamp the notes saying what was clamped and why."""
    if outcome.reasons:
        return list(outcome.reasons)
    clamp = outcome.obligations.get("clamp")
    notes = clamp.get("notes") if isinstance(clamp, dict) else None
    return [n for n in notes if isinstance(n, dict)] if isinstance(notes, list) else []


def _record(session: Session, run: AutopilotRun, now: datetime) -> AutopilotRun:
    run.finished_at = max(now, run.started_at)
    session.add(run)
    session.flush()
    return run


def optimize_link(
    session: Session,
    gateway: Gateway,
    link: SmartLink,
    *,
    actor: Actor,
    rng: np.random.Generator,
    now: datetime,
    trigger: str = "schedule",
    triggered_by: str | None = None,
    owner: str | None = None,
) -> CycleResult:
    """One allocation cycle for `link`: evidence, proposal, decision, record. The caller commits."""
    run = AutopilotRun(
        kind="allocation",
        scope=link.id,
        link_id=link.id,
        algorithm=link.algorithm,
        started_at=now,
        outcome="skipped",
        reasons=[],
        proposed={},
        approved=None,
        algorithm_state=None,
        trigger=trigger,
        triggered_by=triggered_by,
        owner=owner,
    )

    def finish(outcome: str, reasons: list[dict[str, Any]], error: str | None = None) -> CycleResult:
        run.outcome, run.reasons, run.error = outcome, reasons, error
        _record(session, run, now)
        return CycleResult(run, outcome, reasons, None, {}, None)

    if link.status != "active":
        return finish("skipped", [_reason("link_not_active", f"the link is {link.status}: no cycle runs")])
    try:
        info = registry.get(link.algorithm)
        if info.kind != "allocation":
            raise registry.UnknownAlgorithm(link.algorithm)
        algorithm = registry.create(link.algorithm, link.algorithm_params or {})
    except registry.UnknownAlgorithm as exc:
        return finish("error", [_reason("unknown_algorithm", str(exc))])
    except InvalidParameters as exc:
        return finish("error", [_reason("invalid_algorithm_params", str(exc))])
    arms = arm_ids(session, link.id)
    if not arms:
        return finish("skipped", [_reason("no_arms", "the link has no offers to route to")])

    evidence = arm_evidence(session, link.id)
    # A click converts at most once in the counters; the min() guards against a concurrent
    # second conversion having counted twice (Bernoulli algorithms need conversions <= clicks).
    stats = [
        ArmStats(
            arm,
            int(evidence[arm]["clicks"]),
            min(int(evidence[arm]["conversions"]), int(evidence[arm]["clicks"])),
            max(float(evidence[arm]["revenue"]), 0.0),
        )
        for arm in arms
    ]
    state = previous_state(session, link.id, link.algorithm)
    current = current_weights(session, link)
    proposal = cast(AllocationAlgorithm, algorithm).propose(stats, current, rng, state=state)
    outcome, allocation = approve_allocation(
        session,
        gateway,
        link,
        proposal.weights,
        actor=actor,
        algorithm=link.algorithm,
        algorithm_version=proposal.version,
        evidence=finite_json(dict(proposal.evidence)),
        note=f"autopilot cycle ({trigger}{', by ' + triggered_by if triggered_by else ''})",
    )
    approved = {str(k): float(v) for k, v in outcome.params["weights"].items()} if allocation is not None else None
    reasons = _outcome_reasons(outcome)
    run.outcome = outcome.record.outcome
    run.reasons = finite_json(reasons)
    run.proposed = dict(proposal.weights)
    run.approved = approved
    run.algorithm_state = finite_json(dict(proposal.state)) if proposal.state is not None else None
    run.decision_id = outcome.decision_id
    run.allocation_id = allocation.id if allocation is not None else None
    run.error = outcome.error
    _record(session, run, gateway.clock())
    return CycleResult(
        run,
        run.outcome,
        reasons,
        outcome.decision_id,
        dict(proposal.weights),
        approved,
        run.allocation_id,
        outcome.record.error_code,
    )


# -- budgets ----------------------------------------------------------------------------------
def _money(value: float) -> Decimal:
    return Decimal(str(round(float(value), 4))).quantize(Decimal("0.0001"))


def campaign_stats(session: Session, campaigns: list[Campaign], now: datetime) -> list[CampaignStats]:
    """Today's spend, and cost and attributed revenue over the ROI window, per campaign.

    Revenue is attributed through the campaign's link: the link's conversions (not rejected, in
    the campaign's currency) over the window, split between the link's campaigns in proportion
    to the clicks their sources reported (equally when none did)."""
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=ROI_WINDOW_DAYS - 1)
    ids = [c.id for c in campaigns]
    cost: dict[str, float] = {}
    clicks: dict[str, int] = {}
    spend_today: dict[str, float] = {}
    for campaign_id, day, amount, n in session.execute(
        select(CampaignCost.campaign_id, CampaignCost.day, CampaignCost.amount, CampaignCost.clicks).where(
            CampaignCost.campaign_id.in_(ids), CampaignCost.day >= first_day
        )
    ):
        cost[campaign_id] = cost.get(campaign_id, 0.0) + float(amount)
        clicks[campaign_id] = clicks.get(campaign_id, 0) + int(n or 0)
        if day == today:
            spend_today[campaign_id] = spend_today.get(campaign_id, 0.0) + float(amount)
    window_start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    revenue = {
        (link_id, currency): float(total)
        for link_id, currency, total in session.execute(
            select(Conversion.link_id, Conversion.currency, func.sum(Conversion.amount))
            .where(Conversion.created_at >= window_start, Conversion.status != "rejected")
            .group_by(Conversion.link_id, Conversion.currency)
        )
    }
    by_link: dict[str, list[Campaign]] = {}
    for c in campaigns:
        if c.link_id:
            by_link.setdefault(c.link_id, []).append(c)
    elapsed = (now.astimezone(UTC) - datetime.combine(today, datetime.min.time(), tzinfo=UTC)).total_seconds()
    out: list[CampaignStats] = []
    for c in campaigns:
        attributed = 0.0
        if c.link_id:
            peers = [p for p in by_link[c.link_id] if p.currency == c.currency]
            total_clicks = sum(clicks.get(p.id, 0) for p in peers)
            share = clicks.get(c.id, 0) / total_clicks if total_clicks else 1.0 / len(peers)
            attributed = revenue.get((c.link_id, c.currency), 0.0) * share
        out.append(
            CampaignStats(
                campaign_id=c.id,
                budget=float(c.daily_budget),
                daily_cap=float(c.daily_cap),
                spend_today=spend_today.get(c.id, 0.0),
                revenue=attributed,
                cost=cost.get(c.id, 0.0),
                hours_elapsed_fraction=min(max(elapsed / 86400.0, 0.0), 1.0),
            )
        )
    return out


def run_budget_arbitrage(
    session: Session,
    gateway: Gateway,
    *,
    actor: Actor = BUDGET_ACTOR,
    now: datetime,
    params: Mapping[str, object] | None = None,
    trigger: str = "schedule",
    triggered_by: str | None = None,
    owner: str | None = None,
) -> list[CycleResult]:
    """One budget cycle per currency over the active campaigns. The total of the current daily
    budgets is what gets reallocated; the policy's clamp is applied before Campaign.daily_budget
    changes. The caller commits."""
    campaigns = list(session.scalars(select(Campaign).where(Campaign.status == "active").order_by(Campaign.id)))
    groups: dict[str, list[Campaign]] = {}
    for c in campaigns:
        groups.setdefault(c.currency, []).append(c)
    results: list[CycleResult] = []
    for currency, group in sorted(groups.items()):
        scope = f"campaigns:{currency}"
        stats = campaign_stats(session, group, now)
        total = sum(s.budget for s in stats)
        algorithm = cast(BudgetAlgorithm, registry.create(BUDGET_ALGORITHM, params or {}))
        proposal = algorithm.propose(stats, total, state=previous_state(session, scope, BUDGET_ALGORITHM))
        state: dict[str, Any] = {
            "campaigns": {
                s.campaign_id: {
                    "budget": s.budget,
                    "daily_cap": s.daily_cap,
                    "spend_today": s.spend_today,
                    **({"roi": s.roi} if s.roi is not None else {}),
                }
                for s in stats
            }
        }
        by_id = {c.id: c for c in group}

        def apply_budgets(db: Session, params: dict[str, Any], by_id: dict[str, Campaign] = by_id) -> dict[str, str]:
            changed: dict[str, str] = {}
            for campaign_id, amount in params["budgets"].items():
                campaign = by_id[campaign_id]
                campaign.daily_budget = _money(amount)
                changed[campaign_id] = str(campaign.daily_budget)
            db.flush()
            return changed

        outcome = gateway.decide(
            session,
            Action(
                type="budget.reallocate",
                actor=actor,
                target=Target(kind="account", id=scope),
                params={"budgets": dict(proposal.budgets)},
            ),
            state=state,
            caller=actor,
            execute=apply_budgets,
            note=f"budget cycle ({trigger})",
        )
        run = AutopilotRun(
            kind="budget",
            scope=scope,
            link_id=None,
            algorithm=BUDGET_ALGORITHM,
            started_at=now,
            outcome=outcome.record.outcome,
            reasons=finite_json(_outcome_reasons(outcome)),
            proposed=dict(proposal.budgets),
            approved=dict(outcome.params["budgets"]) if outcome.executed else None,
            algorithm_state=finite_json(dict(proposal.state)) if proposal.state is not None else None,
            decision_id=outcome.decision_id,
            trigger=trigger,
            triggered_by=triggered_by,
            owner=owner,
            error=outcome.error,
        )
        _record(session, run, gateway.clock())
        results.append(
            CycleResult(
                run,
                run.outcome,
                list(run.reasons),
                outcome.decision_id,
                run.proposed,
                run.approved,
                error_code=outcome.record.error_code,
            )
        )
    return results


# -- a whole cycle over every link, one transaction per link ------------------------------------
def active_link_ids(session: Session) -> list[str]:
    return list(session.scalars(select(SmartLink.id).where(SmartLink.status == "active").order_by(SmartLink.id)))


def run_links_cycle(
    db: Database,
    gateway: Gateway,
    *,
    rng: np.random.Generator,
    clock: Callable[[], datetime],
    trigger: str,
    owner: str | None = None,
    link_ids: list[str] | None = None,
    triggered_by: str | None = None,
) -> list[CycleResult]:
    """Optimise every active link (or `link_ids`); a link that fails is recorded as an error and
    does not stop the others."""
    if link_ids is None:
        with db.session() as session:
            link_ids = active_link_ids(session)
    results: list[CycleResult] = []
    for link_id in link_ids:
        with db.unit_of_work() as uow:
            link = uow.session.get(SmartLink, link_id)
            if link is None:
                continue
            try:
                result = optimize_link(
                    uow.session,
                    gateway,
                    link,
                    actor=autopilot_actor(link),
                    rng=rng,
                    now=clock(),
                    trigger=trigger,
                    triggered_by=triggered_by,
                    owner=owner,
                )
                uow.commit()
            except Exception as exc:
                log.exception("autopilot cycle for link %s failed", link_id)
                uow.rollback()
                result = _record_failure(db, link_id, exc, clock(), trigger, owner)
        results.append(result)
    return results


def _record_failure(
    db: Database, link_id: str, exc: Exception, now: datetime, trigger: str, owner: str | None
) -> CycleResult:
    with db.unit_of_work() as uow:
        link = uow.session.get(SmartLink, link_id)
        run = AutopilotRun(
            kind="allocation",
            scope=link_id,
            link_id=link_id,
            algorithm=link.algorithm if link is not None else "unknown",
            started_at=now,
            outcome="error",
            reasons=[_reason("cycle_failed", f"{type(exc).__name__}: {exc}"[:500])],
            proposed={},
            approved=None,
            algorithm_state=None,
            trigger=trigger,
            owner=owner,
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        _record(uow.session, run, now)
        uow.commit()
        return CycleResult(run, "error", list(run.reasons), None, {}, None)
