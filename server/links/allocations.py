"""Approving allocations: the only way a link's traffic split changes. Every new allocation is an
`allocation.update` action decided by the governance gateway; only an allowed (or clamped) one
becomes the link's current allocation, in the transaction that records the decision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.governance.gateway import Action, Actor, Gateway, Outcome, Target
from server.links.models import Allocation, ArmStat, LinkArm, SmartLink

ALLOCATION_POLICIES = ("traffic_optimizer", "thompson_sampling", "ucb")


def policy_for(algorithm: str) -> str:
    """The Rego policy that judges allocations proposed by `algorithm` (a registry name)."""
    if algorithm in ALLOCATION_POLICIES:
        return algorithm
    if algorithm.startswith("thompson"):
        return "thompson_sampling"
    if "ucb" in algorithm:
        return "ucb"
    return "traffic_optimizer"


def arm_ids(session: Session, link_id: str) -> list[str]:
    return list(session.scalars(select(LinkArm.offer_id).where(LinkArm.link_id == link_id).order_by(LinkArm.offer_id)))


def arm_evidence(session: Session, link_id: str, since_hour: int | None = None) -> dict[str, dict[str, Any]]:
    """Human clicks, conversions and revenue per arm (all time, or since an hour bucket)."""
    query = select(
        ArmStat.offer_id,
        func.coalesce(func.sum(ArmStat.clicks), 0),
        func.coalesce(func.sum(ArmStat.conversions), 0),
        func.coalesce(func.sum(ArmStat.revenue), 0),
    ).where(ArmStat.link_id == link_id)
    if since_hour is not None:
        query = query.where(ArmStat.hour >= since_hour)
    rows = session.execute(query.group_by(ArmStat.offer_id)).all()
    evidence = {
        offer: {"clicks": int(clicks), "conversions": int(conv), "revenue": float(revenue)}
        for offer, clicks, conv, revenue in rows
    }
    for offer in arm_ids(session, link_id):
        evidence.setdefault(offer, {"clicks": 0, "conversions": 0, "revenue": 0.0})
    return evidence


def current_weights(session: Session, link: SmartLink) -> dict[str, float] | None:
    if link.current_allocation_id is None:
        return None
    allocation = session.get(Allocation, link.current_allocation_id)
    return {str(k): float(v) for k, v in allocation.weights.items()} if allocation else None


def allocation_state(session: Session, link: SmartLink) -> dict[str, Any]:
    """What the allocation policies need to judge a new allocation for `link`."""
    arms = arm_ids(session, link.id)
    evidence = arm_evidence(session, link.id)
    return {
        "arms": arms,
        "current_weights": current_weights(session, link) or {},
        "evidence": {arm: evidence[arm] for arm in arms},
        "link": {"id": link.id, "status": link.status, "algorithm": link.algorithm},
    }


def approve_allocation(
    session: Session,
    gateway: Gateway,
    link: SmartLink,
    weights: Mapping[str, float],
    *,
    actor: Actor,
    algorithm: str | None = None,
    algorithm_version: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    note: str | None = None,
    dry_run: bool = False,
) -> tuple[Outcome, Allocation | None]:
    """Ask the policy to approve `weights` for `link`; when allowed (possibly clamped), store the
    allocation and make it current. Returns the decision outcome and the new allocation, if any."""
    algorithm = algorithm or link.algorithm
    created: list[Allocation] = []

    def make_current(db: Session, params: dict[str, Any]) -> int:
        allocation = Allocation(
            link_id=link.id,
            weights={str(k): float(v) for k, v in params["weights"].items()},
            algorithm=algorithm,
            algorithm_version=algorithm_version,
            evidence=dict(evidence or {}),
        )
        db.add(allocation)
        db.flush()
        link.current_allocation_id = allocation.id
        db.flush()
        created.append(allocation)
        return allocation.id

    outcome = gateway.decide(
        session,
        Action(
            type="allocation.update",
            actor=actor,
            target=Target(kind="link", id=link.id),
            params={"algorithm": policy_for(algorithm), "weights": {str(k): float(v) for k, v in weights.items()}},
        ),
        state=allocation_state(session, link),
        caller=actor,
        dry_run=dry_run,
        execute=make_current,
        note=note,
    )
    allocation = created[0] if created and outcome.executed else None
    if allocation is not None:
        allocation.decision_id = outcome.decision_id
    return outcome, allocation
