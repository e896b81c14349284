"""Anomaly detection against baselines and the degraded-mode rules built on it."""

from __future__ import annotations

from typing import Any

import pytest

from server.ai.anomalies import Counts, Thresholds, conversion_z, link_anomalies, spend_spike
from server.ai.rules import propose
from server.ai.snapshot import Snapshot
from server.ai.validation import Proposal, validate_item

T = Thresholds()
WEEK = Counts(6720, 336, 3360.0)  # 5 % CR, EPC 0.5


def test_a_collapsed_offer_is_a_critical_conversion_rate_drop() -> None:
    hits = link_anomalies("l1", {"o1": Counts(240, 0, 0.0)}, {"o1": WEEK}, T)
    assert [h.code for h in hits] == ["conversion_rate_drop", "epc_drop"], "one arm: the link's EPC fell too"
    hit = hits[0]
    assert (hit.code, hit.severity, hit.target_kind, hit.target_id, hit.link_id) == (
        "conversion_rate_drop", "critical", "offer", "o1", "l1",
    )  # fmt: skip
    assert hit.score is not None and hit.score < -3


def test_noise_and_small_samples_are_not_anomalies() -> None:
    assert link_anomalies("l1", {"o1": Counts(240, 11, 110.0)}, {"o1": WEEK}, T) == []  # 4.6 %: noise
    assert link_anomalies("l1", {"o1": Counts(60, 0, 0.0)}, {"o1": WEEK}, T) == []  # too few clicks
    assert link_anomalies("l1", {"o1": Counts(240, 0, 0.0)}, {"o1": Counts()}, T) == []  # no baseline
    assert conversion_z(Counts(), WEEK) is None


def test_a_halved_epc_on_a_link_is_a_warning() -> None:
    hits = link_anomalies("l1", {"a": Counts(300, 7, 35.0), "b": Counts(300, 8, 40.0)}, {"a": WEEK, "b": WEEK}, T)
    assert [(h.code, h.severity, h.target_id) for h in hits] == [("epc_drop", "warning", "l1")]


def test_a_new_best_arm_is_drift() -> None:
    recent = {"a": Counts(1000, 20, 200.0), "b": Counts(1000, 80, 800.0)}
    baseline = {"a": Counts(5000, 400, 4000.0), "b": Counts(5000, 100, 1000.0)}
    codes = {h.code for h in link_anomalies("l1", recent, baseline, T)}
    assert "best_arm_changed" in codes


@pytest.mark.parametrize(
    ("spend", "fraction", "expected"),
    [(60.0, 0.5, None), (120.0, 0.5, "warning"), (250.0, 0.5, "critical"), (500.0, 0.1, None)],
)
def test_spend_projected_over_the_day_against_its_baseline(spend: float, fraction: float, expected: str | None) -> None:
    hit = spend_spike("c1", spend, 100.0, fraction, T)
    assert (hit.severity if hit else None) == expected
    assert spend_spike("c1", 500.0, None, 0.5, T) is None


def _snapshot(**data: Any) -> Snapshot:
    links = [
        {
            "id": "l1",
            "algorithm": "thompson_sampling",
            "params": {"gamma": 1.0},
            "offers": [{"id": "o1", "status": "active"}, {"id": "o2", "status": "active"}],
        },
        {"id": "l2", "algorithm": "ucb", "params": {}, "offers": [{"id": "o3", "status": "active"}]},
    ]
    anomalies = link_anomalies(
        "l1", {"o1": Counts(240, 0, 0.0), "o2": Counts(240, 12, 120.0)}, {"o1": WEEK, "o2": WEEK}, T
    )
    anomalies += link_anomalies("l2", {"o3": Counts(240, 0, 0.0)}, {"o3": WEEK}, T)
    anomalies += link_anomalies(
        "l1",
        {"o1": Counts(1000, 20, 200.0), "o2": Counts(1000, 80, 800.0)},
        {"o1": Counts(5000, 400, 4000.0), "o2": Counts(5000, 100, 1000.0)},
        T,
    )
    campaigns = [
        {
            "id": "c_bad",
            "status": "active",
            "currency": "EUR",
            "daily_budget": 300.0,
            "daily_cap": 600.0,
            "roi_7d": -0.4,
        },
        {
            "id": "c_good",
            "status": "active",
            "currency": "EUR",
            "daily_budget": 200.0,
            "daily_cap": 400.0,
            "roi_7d": 0.8,
        },
        {
            "id": "c_usd",
            "status": "active",
            "currency": "USD",
            "daily_budget": 200.0,
            "daily_cap": 900.0,
            "roi_7d": 2.0,
        },
    ]
    anomalies.append(spend_spike("c_bad", 150.0, 100.0, 0.5, T))  # type: ignore[arg-type]
    base = {"links": links, "campaigns": campaigns, "ai_paused": [{"kind": "offer", "id": "o9", "hours_paused": 30.0}]}
    return Snapshot(data={**base, **data}, anomalies=anomalies)


def test_the_rules_propose_the_same_kinds_of_actions_and_they_validate() -> None:
    items = propose(_snapshot())
    summary = [(i["action"], (i["target"] or {}).get("id")) for i in items]
    assert ("ai.offer.pause", "o1") in summary
    assert ("ai.review.request", "l2") in summary, "the only active offer of a link is not paused"
    assert ("ai.alert", "c_bad") in summary and ("ai.budget.shift", "c_bad") in summary
    assert ("ai.algorithm.set_param", "l1") in summary and ("ai.offer.resume", "o9") in summary
    shift = next(i for i in items if i["action"] == "ai.budget.shift")
    assert shift["params"]["to_campaign"] == "c_good" and shift["params"]["amount"] == 30.0
    assert all(isinstance(validate_item(i), Proposal) for i in items), "rules speak the model's format"


def test_the_rules_skip_what_waits_or_was_just_done_and_respect_the_limit() -> None:
    skip = {("ai.offer.pause", "o1"), ("ai.offer.resume", "o9")}
    summary = [(i["action"], (i["target"] or {}).get("id")) for i in propose(_snapshot(), skip=skip)]
    assert ("ai.offer.pause", "o1") not in summary and ("ai.offer.resume", "o9") not in summary
    assert len(propose(_snapshot(), limit=2)) == 2
    assert propose(Snapshot(data={})) == []
