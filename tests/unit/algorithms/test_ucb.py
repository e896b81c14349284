"""Tests of UCB1 and KL-UCB: bounds, indices, per-click policies and the allocation rule."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms.base import ArmStats, validate_weights
from algorithms.params import InvalidParameters
from algorithms.ucb import (
    KLUCBPolicy,
    UCB1Policy,
    UCBAllocation,
    kl_bernoulli,
    kl_ucb_indices,
    kl_upper_bound,
    kl_upper_bound_bisection,
    ucb1_indices,
)

from ._helpers import arm_stats_lists, ev, property_settings


def _kl_scalar(p: float, q: float) -> float:
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


class TestKL:
    @pytest.mark.parametrize(("p", "q"), [(0.4, 0.5), (0.0, 0.3), (1.0, 0.7), (0.2, 0.2), (0.01, 0.99)])
    def test_kl_values(self, p: float, q: float) -> None:
        assert float(kl_bernoulli(p, q)) == pytest.approx(_kl_scalar(p, q), abs=1e-14)

    def test_kl_infinite_at_edges(self) -> None:
        assert math.isinf(float(kl_bernoulli(0.5, 1.0)))
        assert math.isinf(float(kl_bernoulli(0.5, 0.0)))

    def test_lai_robbins_constants_of_chapelle_li(self) -> None:
        for eps, expected in ((0.1, 44.7), (0.02, 224.9)):
            c = 9 * eps / float(kl_bernoulli(0.5 - eps, 0.5))
            assert c == pytest.approx(expected, abs=0.05)


class TestKLUpperBound:
    @pytest.mark.parametrize("p", [0.0, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.77, 0.99, 0.999999, 1.0])
    @pytest.mark.parametrize("d", [1e-8, 1e-4, 0.01, 0.1, 1.0, 5.0, 30.0])
    def test_against_brute_force_grid(self, p: float, d: float) -> None:
        q = float(kl_upper_bound(p, d))
        assert p <= q <= 1.0
        # Brute force: the largest grid point in [p, 1) whose divergence is within d.
        grid = np.linspace(p, 1.0, 200_001)[:-1]
        ok = grid[kl_bernoulli(p, grid) <= d]
        brute = float(ok.max()) if ok.size else p
        assert q == pytest.approx(brute, abs=(1.0 - p) / 200_000 + 1e-9)
        if p < 1.0 and q < 1.0 - 1e-9:
            assert _kl_scalar(p, q) == pytest.approx(d, rel=1e-6, abs=1e-12)

    def test_newton_equals_bisection_on_random_inputs(self) -> None:
        rng = np.random.default_rng(0)
        p = np.concatenate([rng.random(500), rng.random(100) * 1e-3, 1 - rng.random(100) * 1e-3, [0.0, 1.0]])
        d = np.concatenate([rng.exponential(0.3, 600), rng.exponential(1e-4, 102)])
        q = kl_upper_bound(p, d)
        ref = np.array([kl_upper_bound_bisection(a, b) for a, b in zip(p, d, strict=True)])
        np.testing.assert_allclose(q, ref, atol=1e-9)

    def test_edge_cases(self) -> None:
        assert float(kl_upper_bound(0.3, 0.0)) == 0.3
        assert float(kl_upper_bound(1.0, 2.0)) == 1.0
        assert float(kl_upper_bound(0.0, 2.0)) == pytest.approx(1 - math.exp(-2.0), abs=1e-12)
        assert kl_upper_bound(np.full((3, 4), 0.5), 0.1).shape == (3, 4)


class TestIndices:
    def test_ucb1_formula(self) -> None:
        idx = ucb1_indices([3.0, 0.0], [10.0, 0.0], 100.0)
        assert idx[0] == pytest.approx(0.3 + math.sqrt(2 * math.log(100) / 10))
        assert math.isinf(idx[1])

    def test_kl_ucb_tighter_than_ucb1_and_above_mean(self) -> None:
        s = np.array([5.0, 50.0, 400.0])
        n = np.array([100.0, 500.0, 1000.0])
        kl = kl_ucb_indices(s, n, 1600.0)
        u1 = ucb1_indices(s, n, 1600.0)
        assert np.all(kl >= s / n) and np.all(kl < u1)

    def test_kl_ucb_exploration_constant(self) -> None:
        base = kl_ucb_indices([5.0], [50.0], 1000.0, c=0.0)[0]
        more = kl_ucb_indices([5.0], [50.0], 1000.0, c=3.0)[0]
        d = (math.log(1000) + 3 * math.log(math.log(1000))) / 50
        assert more > base
        assert more == pytest.approx(kl_upper_bound_bisection(0.1, d), abs=1e-9)


class TestPerClickPolicies:
    @pytest.mark.parametrize("cls", [UCB1Policy, KLUCBPolicy])
    def test_plays_each_arm_then_converges(self, cls: type[UCB1Policy] | type[KLUCBPolicy]) -> None:
        pol = cls(["a", "b", "c"])
        rnd = random.Random(3)
        rates = {"a": 0.2, "b": 0.6, "c": 0.3}
        first = []
        picks = []
        for t in range(3000):
            arm = pol.select()
            if t < 3:
                first.append(arm)
            pol.update(arm, 1.0 if rnd.random() < rates[arm] else 0.0)
            picks.append(arm)
        assert sorted(first) == ["a", "b", "c"]
        assert picks[-1000:].count("b") > 800
        assert pol.t == 3000 and sum(pol.pulls) == 3000

    def test_validation(self) -> None:
        with pytest.raises(ValueError):
            UCB1Policy([])
        with pytest.raises(ValueError):
            UCB1Policy(["a"], c=-1)
        with pytest.raises(ValueError):
            KLUCBPolicy(["a"], c=-1)
        pol = KLUCBPolicy(["a"])
        with pytest.raises(ValueError):
            pol.update("a", 2.0)


class TestAllocation:
    def test_unexplored_arms_share_the_top(self) -> None:
        stats = [ArmStats("a", 100, 10, 0.0), ArmStats("b", 0, 0, 0.0), ArmStats("c", 0, 0, 0.0)]
        p = UCBAllocation(floor=0.02).propose(stats, None, np.random.default_rng(0))
        assert p.weights["a"] == pytest.approx(0.02)
        assert p.weights["b"] == pytest.approx(0.49) and p.weights["c"] == pytest.approx(0.49)
        assert ev(p)["winners"] == ["b", "c"]
        json.dumps(p.evidence)

    @pytest.mark.parametrize("variant", ["ucb1", "kl_ucb"])
    def test_best_arm_gets_the_rest(self, variant: str) -> None:
        stats = [ArmStats("good", 5000, 500, 0.0), ArmStats("bad", 5000, 250, 0.0)]
        p = UCBAllocation(variant=variant, floor=0.05).propose(stats, None, np.random.default_rng(0))
        assert p.weights == {"good": pytest.approx(0.95), "bad": pytest.approx(0.05)}
        assert p.algorithm == "ucb"

    def test_floor_capped_at_uniform(self) -> None:
        stats = [ArmStats(f"a{i}", 10, i, 0.0) for i in range(4)]
        p = UCBAllocation(floor=0.5).propose(stats, None, np.random.default_rng(0))
        assert all(w == pytest.approx(0.25) for w in p.weights.values())

    def test_params(self) -> None:
        assert UCBAllocation(variant="ucb1").exploration == 2.0
        assert UCBAllocation().exploration == 0.0
        assert UCBAllocation.from_params({"variant": "ucb1", "exploration": 1}).exploration == 1.0
        with pytest.raises(InvalidParameters) as err:
            UCBAllocation.from_params({"variant": "thompson", "floor": 2})
        assert set(err.value.errors) == {"variant", "floor"}


@property_settings(60)
@given(arm_stats_lists(), st.sampled_from(["ucb1", "kl_ucb"]), st.floats(min_value=0.0, max_value=0.5))
def test_property_allocation_is_probability_vector(stats: list[ArmStats], variant: str, floor: float) -> None:
    p = UCBAllocation(variant=variant, floor=floor).propose(stats, None, np.random.default_rng(0))
    validate_weights(p.weights)
    k = len(stats)
    assert min(p.weights.values()) >= min(floor, 1.0 / k) - 1e-12
    json.dumps(p.evidence)
