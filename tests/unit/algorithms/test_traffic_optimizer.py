"""Tests of EPC re-weighting: explore/exploit split, floor, smoothing state, eligibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms.base import ArmStats, validate_weights
from algorithms.params import InvalidParameters
from algorithms.traffic_optimizer import TrafficOptimizer

from ._helpers import arm_stats_lists, ev, property_settings

RNG = np.random.default_rng(0)


def test_best_epc_gets_exploit_share() -> None:
    stats = [
        ArmStats("a", 1000, 10, 100.0),  # EPC 0.10
        ArmStats("b", 1000, 20, 300.0),  # EPC 0.30
        ArmStats("c", 1000, 15, 200.0),  # EPC 0.20
        ArmStats("d", 1000, 5, 50.0),  # EPC 0.05
    ]
    p = TrafficOptimizer(explore_share=0.2, floor=0.0).propose(stats, None, RNG)
    assert p.weights["b"] == pytest.approx(0.8 + 0.05)
    for arm in "acd":
        assert p.weights[arm] == pytest.approx(0.05)
    assert ev(p)["best_arm"] == "b"
    json.dumps(p.evidence)


def test_floor_lifts_small_shares() -> None:
    stats = [ArmStats(f"a{i}", 1000, 1, float(i)) for i in range(10)]
    p = TrafficOptimizer(explore_share=0.0, floor=0.05).propose(stats, None, RNG)
    assert min(p.weights.values()) == pytest.approx(0.05)
    assert p.weights["a9"] == pytest.approx(1.0 - 9 * 0.05)


def test_arms_below_min_clicks_only_explore() -> None:
    stats = [ArmStats("old", 5000, 50, 500.0), ArmStats("new", 20, 5, 100.0)]  # new has EPC 5.0
    p = TrafficOptimizer(min_clicks=100, explore_share=0.2, floor=0.0).propose(stats, None, RNG)
    assert p.weights["old"] == pytest.approx(0.9)
    assert p.weights["new"] == pytest.approx(0.1)
    assert ev(p)["arms"]["new"]["eligible"] is False


def test_no_revenue_gives_uniform() -> None:
    stats = [ArmStats(f"a{i}", 500, 0, 0.0) for i in range(3)]
    p = TrafficOptimizer().propose(stats, None, RNG)
    assert all(w == pytest.approx(1 / 3) for w in p.weights.values())
    assert ev(p)["best_arm"] is None


def test_proportional_and_profit_objective() -> None:
    stats = [ArmStats("a", 1000, 10, 300.0, cost=250.0), ArmStats("b", 1000, 10, 200.0, cost=50.0)]
    epc = TrafficOptimizer(explore_share=0.0, floor=0.0, exploit="proportional").propose(stats, None, RNG)
    assert epc.weights["a"] == pytest.approx(0.6)
    profit = TrafficOptimizer(explore_share=0.0, floor=0.0, objective="profit_per_click").propose(stats, None, RNG)
    assert profit.weights["b"] == pytest.approx(1.0)


def test_smoothing_state_round_trip() -> None:
    algo = TrafficOptimizer(smoothing=0.5, explore_share=0.2, floor=0.0, min_clicks=0)
    c1 = [ArmStats("a", 1000, 10, 200.0), ArmStats("b", 1000, 10, 100.0)]  # EPC a 0.2, b 0.1
    p1 = algo.propose(c1, None, RNG)
    assert ev(p1)["best_arm"] == "a"
    state = p1.state
    # Next cycle: b earns 0.4 per click on its 1000 new clicks, a 0.2: smoothed b = 0.25 > a = 0.2.
    c2 = [ArmStats("a", 2000, 20, 400.0), ArmStats("b", 2000, 20, 500.0)]
    p2 = algo.propose(c2, p1.weights, RNG, state=state)
    arms = ev(p2)["arms"]
    assert arms["b"]["value_cycle"] == pytest.approx(0.4)
    assert arms["b"]["value_smoothed"] == pytest.approx(0.25)
    assert arms["a"]["value_smoothed"] == pytest.approx(0.2)
    assert ev(p2)["best_arm"] == "b"
    assert ev(p2)["max_abs_change"] == pytest.approx(0.8)
    # Without state the cumulative EPC decides (a 0.2 vs b 0.25 too, but via a different route).
    p3 = algo.propose(c2, None, RNG)
    assert ev(p3)["arms"]["b"]["value_smoothed"] == pytest.approx(0.25)
    # A cycle without new clicks keeps the smoothed value.
    p4 = algo.propose(c2, None, RNG, state=p2.state)
    assert ev(p4)["arms"]["b"]["value_smoothed"] == pytest.approx(0.25)
    assert ev(p4)["arms"]["b"]["value_cycle"] is None


def test_invalid_params() -> None:
    with pytest.raises(InvalidParameters) as err:
        TrafficOptimizer(smoothing=0.0, explore_share=1.5, objective="roi")
    assert set(err.value.errors) == {"smoothing", "explore_share", "objective"}


@property_settings(80)
@given(
    arm_stats_lists(),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=0.5),
    st.sampled_from(["best", "proportional"]),
)
def test_property_probability_vector_with_floor(
    stats: list[ArmStats], explore: float, floor: float, exploit: str
) -> None:
    p = TrafficOptimizer(explore_share=explore, floor=floor, exploit=exploit, min_clicks=10).propose(stats, None, RNG)
    validate_weights(p.weights)
    assert min(p.weights.values()) >= min(floor, 1.0 / len(stats)) - 1e-12
    json.dumps(p.evidence)
