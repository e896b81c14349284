"""The simulated market (pure logic): drift, eligibility, the visit stream and the baselines."""

from __future__ import annotations

import numpy as np
import pytest

from server.autopilot.simulator import ArmSpec, Drift, Market, Scenario, Source, default_scenario


def small(drift: Drift, hours: int = 6) -> Scenario:
    return Scenario(
        arms=(ArmSpec("a", 0.05, 10.0), ArmSpec("b", 0.02, 10.0), ArmSpec("fr", 0.10, 10.0, countries=("FR",))),
        sources=(Source("s", 0.1, 1.0, {"FR": 0.5, "US": 0.5}, {"desktop": 1.0}),),
        hours=hours,
        clicks_per_hour=200,
        drift=drift,
    )


def test_piecewise_drift_changes_rates_at_the_given_hour() -> None:
    market = Market(small(Drift("piecewise", ((3, {"a": 0.01}),))))
    assert market.rate("a", 0) == 0.05 and market.rate("a", 179) == 0.05
    assert market.rate("a", 180) == 0.01 and market.rate("b", 300) == 0.02


def test_random_walk_stays_a_probability_and_is_reproducible() -> None:
    one, two = Market(small(Drift("random_walk", sigma=0.5), 24)), Market(small(Drift("random_walk", sigma=0.5), 24))
    rates = [one.rate("a", h * 60) for h in range(25)]
    assert all(0 < r < 1 for r in rates) and len(set(rates)) > 10
    assert rates == [two.rate("a", h * 60) for h in range(25)]
    assert [v.country for v in one.visits[:50]] == [v.country for v in two.visits[:50]]


def test_fixed_values_renormalise_over_eligible_arms() -> None:
    market = Market(small(Drift()))
    n_fr = sum(v.country == "FR" for v in market.visits)
    n = len(market.visits)
    # All weight on the FR-only offer: FR visits earn 1.0, the others earn nothing.
    assert market.fixed_value([0, 0, 1]) == pytest.approx(n_fr * 1.0)
    # Half on "a", half on "fr": FR visits split, US visits all go to "a".
    assert market.fixed_value([0.5, 0, 0.5]) == pytest.approx(n_fr * 0.75 + (n - n_fr) * 0.5)
    weights, best = market.best_fixed(step=0.1)
    assert weights["b"] == 0 and best >= market.fixed_value([0.5, 0, 0.5]) - 1e-9


def test_the_epc_heuristic_beats_uniform_without_drift() -> None:
    market = Market(small(Drift(), hours=24))
    assert market.epc_heuristic() > market.fixed_value(np.full(3, 1 / 3))


def test_the_default_scenario_has_a_changing_best_offer() -> None:
    market = Market(default_scenario(hours=30, clicks_per_hour=10))
    best = [max(market.arm_ids, key=lambda a: market.rate(a, h * 60) * market.arms[a].payout) for h in (0, 15, 25)]
    assert len(set(best)) == 3
