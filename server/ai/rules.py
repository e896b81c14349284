"""The degraded-mode supervisor: deterministic rules over the snapshot's anomalies that propose the
same kinds of actions as the model, in the model's answer format (so that they pass through the
same validator and the same policy). It runs without a key, while the circuit is open, when the
token budget is spent or when an operator forces it.

* an offer whose conversion rate collapsed (critical) on a link: pause the offer;
* a link whose EPC collapsed to nothing over plenty of clicks: pause the link; a lesser EPC fall:
  ask for a review;
* a campaign whose spend spikes: alert, and when it loses money while another campaign in the
  same currency earns and has room under its cap, shift a small step of budget to it;
* a link whose best offer changed (drift): make its bandit forget faster (Thompson sampling
  gamma 0.95, traffic optimiser smoothing 0.5);
* a link or offer the AI paused a day ago or more: propose resuming it (a person approves).

Rationales carry ids and numbers only, never names taken from the data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from server.ai.prompt import PARAM_KEYS
from server.ai.snapshot import Snapshot

RESUME_AFTER_HOURS = 24.0
SHIFT_SHARE = 0.1  # of the losing campaign's budget
SHIFT_MAX = 50.0
# algorithm -> (parameter, a value that adapts faster, whether the current value is slower than that)
DRIFT_PARAMS: dict[str, tuple[str, float, Callable[[Any], bool]]] = {
    "thompson_sampling": ("gamma", 0.95, lambda v: v is None or float(v) > 0.96),
    "traffic_optimizer": ("smoothing", 0.5, lambda v: v is None or float(v) < 0.45),
}


def item(action: str, target: tuple[str, str] | None, rationale: str, **params: Any) -> dict[str, Any]:
    return {
        "action": action,
        "target": {"kind": target[0], "id": target[1]} if target else None,
        "params": {key: params.get(key) for key in PARAM_KEYS},
        "rationale": rationale,
    }


def _links(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    return {link["id"]: link for link in snapshot.data.get("links", [])}


def _offer_rules(snapshot: Snapshot) -> Iterable[dict[str, Any]]:
    links = _links(snapshot)
    paused: set[str] = set()
    for a in snapshot.anomalies:
        if a.code != "conversion_rate_drop" or a.target_kind != "offer" or a.severity != "critical":
            continue
        link = links.get(a.link_id or "")
        offers = {o["id"]: o for o in (link or {}).get("offers", [])}
        if a.target_id in paused or offers.get(a.target_id, {}).get("status") != "active":
            continue
        active_arms = [o for o in offers.values() if o["status"] == "active"]
        if len(active_arms) < 2:
            yield item(
                "ai.review.request",
                ("link", a.link_id or ""),
                f"offer {a.target_id} is the only active offer of link {a.link_id}: {a.message}",
                reason=f"conversion collapse on the only active offer {a.target_id}",
            )
            continue
        paused.add(a.target_id)
        yield item(
            "ai.offer.pause",
            ("offer", a.target_id),
            f"on link {a.link_id}, {a.message}",
            reason=f"rules: conversion rate collapse on link {a.link_id}",
        )


def _link_rules(snapshot: Snapshot) -> Iterable[dict[str, Any]]:
    for a in snapshot.anomalies:
        if a.code != "epc_drop":
            continue
        if a.severity == "critical" and (a.recent or 0.0) == 0.0:
            yield item(
                "ai.link.pause",
                ("link", a.target_id),
                f"link {a.target_id}: {a.message}",
                reason="rules: EPC collapsed to zero",
            )
        else:
            yield item(
                "ai.review.request",
                ("link", a.target_id),
                f"link {a.target_id}: {a.message}",
                reason=f"EPC of link {a.target_id} fell against its baseline",
            )


def _spend_rules(snapshot: Snapshot) -> Iterable[dict[str, Any]]:
    campaigns = {c["id"]: c for c in snapshot.data.get("campaigns", [])}
    for a in snapshot.anomalies:
        if a.code != "spend_spike":
            continue
        yield item(
            "ai.alert",
            ("campaign", a.target_id),
            f"campaign {a.target_id}: {a.message}",
            severity="warning",
            title=f"Spend spike on campaign {a.target_id}",
            detail=a.message,
        )
        source = campaigns.get(a.target_id)
        if source is None or source.get("roi_7d") is None or source["roi_7d"] >= 0:
            continue
        sinks = [
            c
            for c in campaigns.values()
            if c["id"] != source["id"]
            and c["status"] == "active"
            and c["currency"] == source["currency"]
            and (c.get("roi_7d") or 0.0) > 0
            and c["daily_cap"] - c["daily_budget"] > 0
        ]
        if not sinks:
            continue
        sink = max(sinks, key=lambda c: (c["roi_7d"], c["id"]))
        amount = round(
            min(SHIFT_SHARE * source["daily_budget"], sink["daily_cap"] - sink["daily_budget"], SHIFT_MAX), 2
        )
        if amount <= 0:
            continue
        yield item(
            "ai.budget.shift",
            ("campaign", source["id"]),
            f"campaign {source['id']} spends fast at ROI {source['roi_7d']:.2f}; "
            f"{sink['id']} earns ROI {sink['roi_7d']:.2f}",
            from_campaign=source["id"],
            to_campaign=sink["id"],
            amount=amount,
            reason="rules: spend spike on a losing campaign",
        )


def _drift_rules(snapshot: Snapshot) -> Iterable[dict[str, Any]]:
    links = _links(snapshot)
    for a in snapshot.anomalies:
        if a.code != "best_arm_changed":
            continue
        link = links.get(a.target_id)
        rule = DRIFT_PARAMS.get((link or {}).get("algorithm", ""))
        if link is None or rule is None:
            continue
        param, value, applies = rule
        if not applies(link["params"].get(param)):
            continue
        yield item(
            "ai.algorithm.set_param",
            ("link", link["id"]),
            f"link {link['id']}: {a.message}; {param} {value} adapts faster",
            param=param,
            value=value,
            reason="rules: the best offer changed",
        )


def _resume_rules(snapshot: Snapshot) -> Iterable[dict[str, Any]]:
    for paused in snapshot.data.get("ai_paused", []):
        if paused["hours_paused"] >= RESUME_AFTER_HOURS:
            yield item(
                f"ai.{paused['kind']}.resume",
                (paused["kind"], paused["id"]),
                f"{paused['kind']} {paused['id']} has been paused by the AI for {paused['hours_paused']:.0f} h",
                reason="rules: paused for a day; a person decides whether it runs again",
            )


def propose(
    snapshot: Snapshot, *, skip: set[tuple[str, str | None]] | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """The rule-based proposals for `snapshot`, at most `limit`, without those in `skip`
    ((action, target id) pairs already pending or recently done)."""
    skip = set(skip or ())
    out: list[dict[str, Any]] = []
    for rule in (_offer_rules, _link_rules, _spend_rules, _drift_rules, _resume_rules):
        for proposal in rule(snapshot):
            key = (proposal["action"], (proposal["target"] or {}).get("id"))
            if key in skip:
                continue
            skip.add(key)
            out.append(proposal)
            if len(out) >= limit:
                return out
    return out
