"""Tests of batch (Monte Carlo P(best)) and per-click Thompson sampling."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given

from algorithms.base import ArmStats, validate_weights
from algorithms.params import InvalidParameters
from algorithms.thompson import ThompsonPolicy, ThompsonSampling, discounted, prob_best, thompson_choices

from ._helpers import arm_stats_lists, ev, property_settings


def _beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    out: np.ndarray = np.exp(log_norm + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x))
    return out


def _p_first_larger(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X1 > X2) for independent Beta variables, by numerical integration."""
    x = np.linspace(1e-9, 1 - 1e-9, 200_001)
    dx = x[1] - x[0]
    cdf2 = np.cumsum(_beta_pdf(x, a2, b2)) * dx
    return float(np.sum(_beta_pdf(x, a1, b1) * cdf2) * dx)


def test_better_arm_gets_more_weight_with_evidence() -> None:
    stats = [ArmStats("good", 2000, 120, 0.0), ArmStats("bad", 2000, 80, 0.0)]
    p = ThompsonSampling().propose(stats, None, np.random.default_rng(1))
    assert p.weights["good"] > 0.99
    assert ev(p)["best_arm"] == "good"
    validate_weights(p.weights)


def test_no_evidence_is_near_uniform() -> None:
    stats = [ArmStats(f"a{i}", 0, 0, 0.0) for i in range(4)]
    p = ThompsonSampling(n_samples=40_000).propose(stats, None, np.random.default_rng(2))
    for w in p.weights.values():
        assert w == pytest.approx(0.25, abs=0.015)


def test_prob_best_matches_integral() -> None:
    a1, b1, a2, b2 = 13.0, 90.0, 9.0, 80.0
    exact = _p_first_larger(a1, b1, a2, b2)
    est = prob_best([a1, a2], [b1, b2], 200_000, np.random.default_rng(3))
    assert est[0] == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 200_000))
    assert est.sum() == pytest.approx(1.0)


def test_prob_best_chunks_give_same_distribution() -> None:
    a = np.array([5.0, 6.0, 7.0])
    b = np.array([50.0, 50.0, 50.0])
    small_chunks = prob_best(a, b, 30_000, np.random.default_rng(4), max_chunk_elements=3 * 1000)
    one_chunk = prob_best(a, b, 30_000, np.random.default_rng(5))
    np.testing.assert_allclose(small_chunks, one_chunk, atol=0.02)


def test_single_arm_and_determinism() -> None:
    algo = ThompsonSampling()
    assert algo.propose([ArmStats("x", 5, 1, 0.0)], None, np.random.default_rng(0)).weights == {"x": 1.0}
    stats = [ArmStats("a", 100, 3, 0.0), ArmStats("b", 100, 5, 0.0), ArmStats("c", 10, 0, 0.0)]
    w1 = algo.propose(stats, None, np.random.default_rng(9)).weights
    w2 = algo.propose(stats, None, np.random.default_rng(9)).weights
    assert w1 == w2


def test_evidence_is_json_and_has_posteriors() -> None:
    stats = [ArmStats("a", 100, 3, 9.0), ArmStats("b", 100, 5, 15.0)]
    p = ThompsonSampling(prior_alpha=2.0, prior_beta=3.0).propose(stats, {"a": 0.5, "b": 0.5}, np.random.default_rng(0))
    ev = json.loads(json.dumps(p.evidence))
    assert ev["arms"]["a"]["posterior_alpha"] == 5.0
    assert ev["arms"]["a"]["posterior_beta"] == 100.0
    assert ev["max_abs_change"] == pytest.approx(abs(p.weights["a"] - 0.5))
    assert p.algorithm == "thompson_sampling" and p.version


def test_floor_applies() -> None:
    stats = [ArmStats("good", 5000, 500, 0.0), ArmStats("bad", 5000, 100, 0.0)]
    p = ThompsonSampling(floor=0.05).propose(stats, None, np.random.default_rng(0))
    assert p.weights["bad"] == pytest.approx(0.05)


def test_invalid_params() -> None:
    with pytest.raises(InvalidParameters) as err:
        ThompsonSampling(gamma=0.0, n_samples=10)
    assert set(err.value.errors) == {"gamma", "n_samples"}
    with pytest.raises(ValueError):
        ThompsonSampling().propose([], None, np.random.default_rng(0))
    with pytest.raises(ValueError):
        ThompsonSampling().propose([ArmStats("a", 1, 0, 0.0)] * 2, None, np.random.default_rng(0))


class TestDiscounting:
    def test_discounted_counts(self) -> None:
        first = discounted([ArmStats("a", 100, 10, 0.0)], 0.5)
        assert (first["a"].successes, first["a"].failures) == (10.0, 90.0)
        state = {"arms": {"a": first["a"].to_json()}}
        second = discounted([ArmStats("a", 150, 20, 0.0)], 0.5, state)
        assert second["a"].successes == pytest.approx(0.5 * 10 + 10)
        assert second["a"].failures == pytest.approx(0.5 * 90 + 40)
        assert second["a"].clicks_seen == 150

    def test_reset_and_garbage_state(self) -> None:
        state = {"arms": {"a": {"s": 50.0, "f": 50.0, "clicks": 1000, "conversions": 100}}}
        reset = discounted([ArmStats("a", 10, 1, 0.0)], 0.9, state)  # counters went backwards
        assert (reset["a"].successes, reset["a"].failures) == (1.0, 9.0)
        bad = discounted([ArmStats("a", 10, 1, 0.0)], 0.9, {"arms": {"a": {"s": "x"}}})
        assert bad["a"].successes == 1.0
        with pytest.raises(ValueError):
            discounted([], 1.5)

    def test_late_conversions_do_not_go_negative(self) -> None:
        state = {"arms": {"a": {"s": 0.0, "f": 1.0, "clicks": 10, "conversions": 0}}}
        out = discounted([ArmStats("a", 10, 5, 0.0)], 0.5, state)
        assert out["a"].failures == 0.0 and out["a"].successes == 5.0

    def test_discount_tracks_a_change_faster(self) -> None:
        """Arm b was worse for a long time, then becomes better: gamma < 1 notices sooner."""
        rng = np.random.default_rng(0)

        def run(gamma: float) -> float:
            algo = ThompsonSampling(gamma=gamma, n_samples=4000)
            clicks = {"a": 0, "b": 0}
            conv = {"a": 0, "b": 0}
            state: Mapping[str, object] | None = None
            weight_b = 0.0
            for cycle in range(40):
                rates = {"a": 0.05, "b": 0.02 if cycle < 30 else 0.10}
                for arm in clicks:
                    clicks[arm] += 2000
                    conv[arm] += int(rng.binomial(2000, rates[arm]))
                stats = [ArmStats(a, clicks[a], conv[a], 0.0) for a in clicks]
                p = algo.propose(stats, None, rng, state=state)
                state = p.state
                if cycle == 31:
                    weight_b = p.weights["b"]
            return weight_b

        assert run(0.7) > 0.9
        assert run(1.0) < 0.1


class TestPerClick:
    def test_policy_converges_to_best(self) -> None:
        rnd = random.Random(11)
        pol = ThompsonPolicy(["a", "b", "c"], rng=rnd)
        rates = {"a": 0.1, "b": 0.3, "c": 0.2}
        picks = []
        for _ in range(3000):
            arm = pol.select()
            pol.update(arm, rnd.random() < rates[arm])
            picks.append(arm)
        assert picks[-1000:].count("b") > 800

    def test_policy_validation(self) -> None:
        with pytest.raises(ValueError):
            ThompsonPolicy([])
        with pytest.raises(ValueError):
            ThompsonPolicy(["a", "a"])
        with pytest.raises(ValueError):
            ThompsonPolicy(["a"], prior_alpha=0.0)

    def test_vectorised_choices_shape_and_bias(self) -> None:
        s = np.array([[90.0, 10.0], [10.0, 90.0]])
        n = np.array([[100.0, 100.0], [100.0, 100.0]])
        arms = thompson_choices(s, n - s, np.random.default_rng(0))
        assert arms.tolist() == [0, 1]


@property_settings(40)
@given(arm_stats_lists())
def test_property_proposal_is_probability_vector(stats: list[ArmStats]) -> None:
    p = ThompsonSampling(n_samples=500).propose(stats, None, np.random.default_rng(0))
    validate_weights(p.weights)
    assert list(p.weights) == [s.arm_id for s in stats]
    json.dumps(p.evidence)
