"""Tests of ROI-ranked budget reallocation with adaptive pacing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms.base import CampaignStats
from algorithms.budget_arbitrage import BudgetArbitrage
from algorithms.params import InvalidParameters

from ._helpers import ev, property_settings


def camp(
    cid: str,
    budget: float = 100.0,
    cap: float = 300.0,
    spend: float = 50.0,
    revenue: float = 150.0,
    cost: float = 100.0,
    elapsed: float = 0.5,
) -> CampaignStats:
    return CampaignStats(cid, budget, cap, spend, revenue, cost, elapsed)


def _check(proposal_budgets: dict[str, float], campaigns: list[CampaignStats], total: float) -> None:
    assert sum(proposal_budgets.values()) <= total + 1e-9
    for c in campaigns:
        assert 0.0 <= proposal_budgets[c.campaign_id] <= c.daily_cap + 1e-9


def test_higher_roi_gets_more_budget_within_caps_and_total() -> None:
    cs = [
        camp("hi", revenue=300.0, cost=100.0, spend=80.0),  # ROI 2.0, well over pace
        camp("mid", revenue=150.0, cost=100.0, spend=60.0),  # ROI 0.5, over pace
        camp("lo", revenue=110.0, cost=100.0, spend=60.0),  # ROI 0.1, over pace
    ]
    p = BudgetArbitrage().propose(cs, 400.0)
    _check(p.budgets, cs, 400.0)
    assert p.budgets["hi"] > p.budgets["mid"] >= p.budgets["lo"]
    assert p.total == pytest.approx(400.0)
    cev = ev(p)["campaigns"]
    assert cev["hi"]["roi_rank"] == 1
    json.dumps(p.evidence)


def test_losing_campaign_is_cut_to_spend() -> None:
    cs = [camp("win", revenue=300.0), camp("lose", revenue=50.0, spend=40.0)]
    p = BudgetArbitrage(min_roi=0.0).propose(cs, 500.0)
    assert p.budgets["lose"] == pytest.approx(40.0)
    assert p.budgets["win"] > 100.0


def test_caps_bind() -> None:
    cs = [camp("a", cap=120.0, revenue=500.0, spend=90.0), camp("b", cap=1000.0, revenue=120.0, spend=90.0)]
    p = BudgetArbitrage().propose(cs, 2000.0)
    assert p.budgets["a"] == pytest.approx(120.0)
    _check(p.budgets, cs, 2000.0)


def test_total_smaller_than_spend_scales_down() -> None:
    cs = [camp("a", spend=100.0), camp("b", spend=300.0)]
    p = BudgetArbitrage().propose(cs, 200.0)
    _check(p.budgets, cs, 200.0)
    assert ev(p)["floors_scaled"] is True
    assert p.budgets["b"] == pytest.approx(3 * p.budgets["a"])


def test_zero_total() -> None:
    cs = [camp("a")]
    assert BudgetArbitrage().propose(cs, 0.0).budgets == {"a": 0.0}


class TestPacing:
    def test_overpacing_raises_mu_and_shades_bids(self) -> None:
        algo = BudgetArbitrage(step_size=0.5)
        p = algo.propose([camp("a", budget=100.0, spend=80.0, elapsed=0.5)], 1000.0)  # pace 1.6
        cev = ev(p)["campaigns"]["a"]
        assert cev["pace"] == pytest.approx(1.6)
        assert cev["mu"] == pytest.approx(0.3)
        assert cev["bid_multiplier"] == pytest.approx(1 / 1.3)

    def test_underpacing_lowers_mu_to_zero_and_frees_budget(self) -> None:
        algo = BudgetArbitrage(step_size=0.5, headroom=0.0)
        state = {"campaigns": {"a": {"mu": 0.2, "spend_today": 10.0, "elapsed": 0.25}}}
        c = camp("a", budget=200.0, spend=20.0, elapsed=0.5, cap=500.0)  # 10 spent of 50 targeted
        p = algo.propose([c], 1000.0, state=state)
        cev = ev(p)["campaigns"]["a"]
        assert cev["pace"] == pytest.approx(0.2)
        assert cev["mu"] == 0.0  # 0.2 + 0.5 * (0.2 - 1) < 0 -> projected to 0
        # Demand = projected spend 40/day (no headroom): the unused budget is released.
        assert p.budgets["a"] == pytest.approx(40.0)
        assert ev(p)["unallocated"] == pytest.approx(960.0)

    def test_state_round_trip_and_new_day(self) -> None:
        algo = BudgetArbitrage(step_size=0.5, mu_max=1.0)
        p1 = algo.propose([camp("a", budget=100.0, spend=90.0, elapsed=0.5)], 500.0)  # pace 1.8
        mu1 = ev(p1)["campaigns"]["a"]["mu"]
        assert mu1 == pytest.approx(0.4)
        state = p1.state
        p2 = algo.propose([camp("a", budget=100.0, spend=190.0, elapsed=0.6)], 500.0, state=state)
        assert ev(p2)["campaigns"]["a"]["pace"] == pytest.approx(10.0)
        assert ev(p2)["campaigns"]["a"]["mu"] == pytest.approx(1.0)
        # New day: elapsed went back, spend reset -> day-so-far pace, mu carried over.
        p3 = algo.propose([camp("a", budget=100.0, spend=5.0, elapsed=0.1)], 500.0, state=p2.state)
        assert ev(p3)["campaigns"]["a"]["pace"] == pytest.approx(0.5)
        assert ev(p3)["campaigns"]["a"]["mu"] == pytest.approx(0.75)

    def test_start_of_day_keeps_mu(self) -> None:
        state = {"campaigns": {"a": {"mu": 0.4, "spend_today": 0.0, "elapsed": 0.0}}}
        p = BudgetArbitrage().propose([camp("a", spend=0.0, elapsed=0.0)], 500.0, state=state)
        assert ev(p)["campaigns"]["a"]["mu"] == pytest.approx(0.4)
        assert ev(p)["campaigns"]["a"]["pace"] is None


def test_unknown_roi_not_grown_beyond_current_budget() -> None:
    cs = [camp("new", revenue=0.0, cost=0.0, spend=80.0, budget=100.0, cap=1000.0)]
    p = BudgetArbitrage().propose(cs, 1000.0)
    assert p.budgets["new"] == pytest.approx(100.0)
    assert ev(p)["unallocated"] == pytest.approx(900.0)


def test_validation() -> None:
    with pytest.raises(InvalidParameters) as err:
        BudgetArbitrage(step_size=0.0, keep_fraction=2.0)
    assert set(err.value.errors) == {"step_size", "keep_fraction"}
    with pytest.raises(ValueError):
        BudgetArbitrage().propose([camp("a"), camp("a")], 100.0)
    with pytest.raises(ValueError):
        BudgetArbitrage().propose([camp("a")], -1.0)


money = st.floats(min_value=0.0, max_value=1e5, allow_nan=False)


@st.composite
def campaign_lists(draw: st.DrawFn) -> list[CampaignStats]:
    n = draw(st.integers(min_value=1, max_value=8))
    return [
        CampaignStats(
            f"c{i}",
            draw(money),
            draw(money),
            draw(money),
            draw(money),
            draw(money),
            draw(st.floats(min_value=0.0, max_value=1.0)),
        )
        for i in range(n)
    ]


@property_settings(150)
@given(campaign_lists(), money, st.floats(min_value=0.0, max_value=0.5))
def test_property_budgets_valid(campaigns: list[CampaignStats], total: float, keep: float) -> None:
    algo = BudgetArbitrage(keep_fraction=keep)
    p = algo.propose(campaigns, total)
    _check(p.budgets, campaigns, total)
    json.dumps(p.evidence)
    # Feeding the state back is always accepted and still valid.
    p2 = algo.propose(campaigns, total, state=p.state)
    _check(p2.budgets, campaigns, total)
