"""The compact picture of the system a supervisor cycle reasons about: KPIs per link (overall and
per offer) over a recent window and its baseline, campaigns with budgets and spend, recent
decisions and denials, the anomalies the detectors found, what the AI paused and what waits for a
person. The same snapshot feeds the model's prompt (as data) and the degraded rule-based
supervisor, and its anomalies are the evidence the policy asks for before an autonomous pause.

Reads only; a few grouped queries over the hourly arm counters and daily costs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.ai.anomalies import Anomaly, Counts, Thresholds, link_anomalies, spend_spike
from server.ai.models import AiProposal
from server.autopilot.services import campaign_stats
from server.governance.models import Decision
from server.links.models import Allocation, ArmStat, Campaign, CampaignCost, LinkArm, Offer, SmartLink

RECENT_HOURS = 6
BASELINE_HOURS = 7 * 24
MAX_LINKS = 50
MAX_OFFERS_PER_LINK = 12
MAX_CAMPAIGNS = 50
RECENT_DECISIONS = 20
NAME_LIMIT = 120
PAUSED_STATUSES = ("executed", "approved")


@dataclass
class Snapshot:
    """`data` is what the model reads (JSON); `anomalies` are the same findings as objects."""

    data: dict[str, Any]
    anomalies: list[Anomaly] = field(default_factory=list)

    def anomalies_for(self, kind: str, target_id: str) -> list[dict[str, Any]]:
        return [
            {"code": a.code, "severity": a.severity}
            for a in self.anomalies
            if a.target_kind == kind and a.target_id == target_id
        ]


def _name(value: str | None) -> str:
    return (value or "")[:NAME_LIMIT]


def hour_start(now: datetime) -> int:
    epoch = int(now.timestamp())
    return epoch - epoch % 3600


def arm_counts(session: Session, first_hour: int, end_hour: int) -> dict[tuple[str, str], Counts]:
    """Human clicks, conversions and revenue per (link, offer) for hour buckets in [first, end)."""
    rows = session.execute(
        select(
            ArmStat.link_id,
            ArmStat.offer_id,
            func.coalesce(func.sum(ArmStat.clicks), 0),
            func.coalesce(func.sum(ArmStat.conversions), 0),
            func.coalesce(func.sum(ArmStat.revenue), 0),
        )
        .where(ArmStat.hour >= first_hour, ArmStat.hour < end_hour)
        .group_by(ArmStat.link_id, ArmStat.offer_id)
    )
    return {(link, offer): Counts(int(c), int(v), float(r)) for link, offer, c, v, r in rows}


def link_kpis(session: Session, link_ids: list[str], start: datetime, end: datetime) -> dict[str, Any]:
    """Clicks, conversions, revenue, CR and EPC of `link_ids` together, for hours in [start, end)."""
    if not link_ids:
        return Counts().as_dict()
    row = session.execute(
        select(
            func.coalesce(func.sum(ArmStat.clicks), 0),
            func.coalesce(func.sum(ArmStat.conversions), 0),
            func.coalesce(func.sum(ArmStat.revenue), 0),
        ).where(ArmStat.link_id.in_(link_ids), ArmStat.hour >= hour_start(start), ArmStat.hour < hour_start(end))
    ).one()
    return Counts(int(row[0]), int(row[1]), float(row[2])).as_dict()


def _baseline_daily_spend(session: Session, campaign_ids: list[str], today: Any) -> dict[str, float]:
    first = today - timedelta(days=7)
    rows = session.execute(
        select(CampaignCost.campaign_id, func.sum(CampaignCost.amount), func.count())
        .where(CampaignCost.campaign_id.in_(campaign_ids), CampaignCost.day >= first, CampaignCost.day < today)
        .group_by(CampaignCost.campaign_id)
    )
    return {cid: float(total) / int(days) for cid, total, days in rows if days}


def _campaigns(session: Session, now: datetime, t: Thresholds) -> tuple[list[dict[str, Any]], list[Anomaly]]:
    campaigns = list(session.scalars(select(Campaign).order_by(Campaign.id).limit(MAX_CAMPAIGNS)))
    if not campaigns:
        return [], []
    stats = {s.campaign_id: s for s in campaign_stats(session, campaigns, now)}
    today = now.astimezone(UTC).date()
    baseline = _baseline_daily_spend(session, [c.id for c in campaigns], today)
    out: list[dict[str, Any]] = []
    found: list[Anomaly] = []
    for c in campaigns:
        s = stats[c.id]
        out.append(
            {
                "id": c.id,
                "name": _name(c.name),
                "status": c.status,
                "currency": c.currency,
                "link_id": c.link_id,
                "daily_budget": float(c.daily_budget),
                "daily_cap": float(c.daily_cap),
                "spend_today": round(s.spend_today, 4),
                "baseline_daily_spend": round(baseline[c.id], 4) if c.id in baseline else None,
                "roi_7d": round(s.roi, 4) if s.roi is not None else None,
            }
        )
        if c.status == "active":
            hit = spend_spike(c.id, s.spend_today, baseline.get(c.id), s.hours_elapsed_fraction, t, link_id=c.link_id)
            if hit is not None:
                found.append(hit)
    return out, found


def _recent_decisions(session: Session, now: datetime) -> tuple[list[dict[str, Any]], dict[str, int]]:
    recent = [
        {
            "at": d.created_at.isoformat(),
            "type": d.action_type,
            "actor_kind": d.actor_kind,
            "target": f"{d.target_kind}:{d.target_id}" if d.target_kind else None,
            "outcome": d.outcome,
            "reasons": [str(r.get("code")) for r in (d.reasons or [])[:3] if isinstance(r, dict)],
        }
        for d in session.scalars(select(Decision).order_by(Decision.created_at.desc()).limit(RECENT_DECISIONS))
    ]
    denials: Counter[str] = Counter()
    for reasons in session.scalars(
        select(Decision.reasons)
        .where(Decision.allow.is_(False), Decision.created_at >= now - timedelta(hours=24))
        .order_by(Decision.created_at.desc())
        .limit(500)
    ):
        for r in reasons or []:
            if isinstance(r, dict):
                denials[str(r.get("code"))] += 1
    return recent, dict(denials.most_common(10))


def ai_paused(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Links and offers the AI paused that are still paused, with how long ago."""
    rows = session.execute(
        select(AiProposal.action_type, AiProposal.target_id, func.max(AiProposal.executed_at))
        .where(AiProposal.action_type.in_(("ai.link.pause", "ai.offer.pause")), AiProposal.status.in_(PAUSED_STATUSES))
        .group_by(AiProposal.action_type, AiProposal.target_id)
    ).all()
    out = []
    for action_type, target_id, at in rows:
        kind = "link" if action_type == "ai.link.pause" else "offer"
        row = session.get(SmartLink, target_id) if kind == "link" else session.get(Offer, target_id)
        if row is not None and row.status == "paused" and at is not None:
            out.append(
                {
                    "kind": kind,
                    "id": target_id,
                    "hours_paused": round((now - at).total_seconds() / 3600, 2),
                }
            )
    return sorted(out, key=lambda p: (p["kind"], p["id"]))


def pending_proposals(session: Session) -> list[dict[str, Any]]:
    return [
        {"action": a, "target": f"{k}:{i}" if k else None}
        for a, k, i in session.execute(
            select(AiProposal.action_type, AiProposal.target_kind, AiProposal.target_id)
            .where(AiProposal.status == "pending_approval")
            .order_by(AiProposal.created_at.desc())
            .limit(50)
        )
    ]


def build_snapshot(session: Session, now: datetime, thresholds: Thresholds | None = None) -> Snapshot:
    t = thresholds or Thresholds()
    end = hour_start(now) + 3600
    recent_start = end - RECENT_HOURS * 3600
    recent = arm_counts(session, recent_start, end)
    baseline = arm_counts(session, recent_start - BASELINE_HOURS * 3600, recent_start)
    activity: Counter[str] = Counter()
    for (link_id, _), counts in recent.items():
        activity[link_id] += counts.clicks
    links = list(session.scalars(select(SmartLink)))
    links.sort(key=lambda link: (-activity[link.id], link.id))
    links = links[:MAX_LINKS]
    arms: dict[str, list[str]] = {}
    for link_id, offer_id in session.execute(
        select(LinkArm.link_id, LinkArm.offer_id).where(LinkArm.link_id.in_([link.id for link in links]))
    ):
        arms.setdefault(link_id, []).append(offer_id)
    offers = {
        o.id: o for o in session.scalars(select(Offer).where(Offer.id.in_({o for ids in arms.values() for o in ids})))
    }
    weights = {
        link_id: w
        for link_id, w in session.execute(
            select(SmartLink.id, Allocation.weights).join(Allocation, Allocation.id == SmartLink.current_allocation_id)
        )
    }
    anomalies: list[Anomaly] = []
    link_rows: list[dict[str, Any]] = []
    for link in links:
        arm_ids = sorted(arms.get(link.id, []))[:MAX_OFFERS_PER_LINK]
        by_arm_recent = {o: recent.get((link.id, o), Counts()) for o in arm_ids}
        by_arm_baseline = {o: baseline.get((link.id, o), Counts()) for o in arm_ids}
        if link.status == "active":
            anomalies += link_anomalies(link.id, by_arm_recent, by_arm_baseline, t)
        link_rows.append(
            {
                "id": link.id,
                "name": _name(link.name),
                "status": link.status,
                "algorithm": link.algorithm,
                "params": dict(link.algorithm_params or {}),
                "recent": sum(by_arm_recent.values(), Counts()).as_dict(),
                "baseline": sum(by_arm_baseline.values(), Counts()).as_dict(),
                "offers": [
                    {
                        "id": o,
                        "name": _name(offers[o].name) if o in offers else None,
                        "status": offers[o].status if o in offers else "unknown",
                        "weight": round(float((weights.get(link.id) or {}).get(o, 0.0)), 4),
                        "recent": by_arm_recent[o].as_dict(),
                        "baseline": by_arm_baseline[o].as_dict(),
                    }
                    for o in arm_ids
                ],
            }
        )
    campaigns, spend_anomalies = _campaigns(session, now, t)
    anomalies += spend_anomalies
    decisions, denials = _recent_decisions(session, now)
    return Snapshot(
        data={
            "generated_at": now.astimezone(UTC).isoformat(),
            "windows": {"recent_hours": RECENT_HOURS, "baseline_hours": BASELINE_HOURS},
            "links": link_rows,
            "campaigns": campaigns,
            "anomalies": [a.as_dict() for a in anomalies],
            "recent_decisions": decisions,
            "denials_24h": denials,
            "ai_paused": ai_paused(session, now),
            "pending_proposals": pending_proposals(session),
        },
        anomalies=anomalies,
    )
