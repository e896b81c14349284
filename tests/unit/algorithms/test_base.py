"""Tests of the shared data types and of the AliasSampler click-path sampler."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms import base
from algorithms.base import (
    AliasSampler,
    AllocationAlgorithm,
    AllocationProposal,
    ArmStats,
    BudgetAlgorithm,
    BudgetProposal,
    CampaignStats,
    choose_arm,
    validate_weights,
    weights_from_array,
)
from algorithms.budget_arbitrage import BudgetArbitrage
from algorithms.thompson import ThompsonSampling
from algorithms.traffic_optimizer import TrafficOptimizer
from algorithms.ucb import UCBAllocation

from ._helpers import chi2_critical, chi2_statistic, property_settings


class TestArmStats:
    def test_valid(self) -> None:
        s = ArmStats("a", 100, 5, 12.5)
        assert s.cost == 0.0
        assert s.conversion_rate == pytest.approx(0.05)
        assert s.epc == pytest.approx(0.125)

    def test_zero_clicks_rates(self) -> None:
        s = ArmStats("a", 0, 0, 0.0)
        assert s.conversion_rate == 0.0 and s.epc == 0.0

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"clicks": -1}, "clicks"),
            ({"conversions": -1}, "conversions"),
            ({"conversions": 11}, "conversions .* <= clicks"),
            ({"revenue": -0.01}, "revenue"),
            ({"cost": -1.0}, "cost"),
            ({"revenue": float("nan")}, "revenue"),
            ({"revenue": float("inf")}, "revenue"),
            ({"clicks": 1.5}, "clicks must be an integer"),
            ({"clicks": True}, "clicks must be an integer"),
            ({"arm_id": ""}, "arm_id"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, object], match: str) -> None:
        base: dict[str, object] = {"arm_id": "a", "clicks": 10, "conversions": 1, "revenue": 1.0}
        base.update(kwargs)
        with pytest.raises(ValueError, match=match):
            ArmStats(**base)  # type: ignore[arg-type]

    def test_numpy_integers_accepted(self) -> None:
        s = ArmStats("a", np.int64(10), np.int32(2), np.float64(3.0))  # type: ignore[arg-type]
        assert type(s.clicks) is int and type(s.revenue) is float


class TestProposals:
    def test_allocation_valid_and_json(self) -> None:
        p = AllocationProposal({"a": 0.25, "b": 0.75}, {"x": [1, 2]}, "thompson_sampling", "1.0.0")
        assert json.loads(json.dumps(p.to_dict()))["weights"] == {"a": 0.25, "b": 0.75}

    @pytest.mark.parametrize(
        "weights",
        [
            {},
            {"a": 0.5},
            {"a": 0.5, "b": 0.6},
            {"a": -0.1, "b": 1.1},
            {"a": float("nan"), "b": 1.0},
            {"": 1.0},
        ],
    )
    def test_allocation_invalid(self, weights: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            AllocationProposal(weights, {}, "x", "1")

    def test_allocation_needs_algorithm(self) -> None:
        with pytest.raises(ValueError, match="algorithm"):
            AllocationProposal({"a": 1.0}, {}, "", "1")

    def test_budget_valid_and_invalid(self) -> None:
        b = BudgetProposal({"c1": 10.0, "c2": 0.0}, {}, "budget_arbitrage", "1.0.0")
        assert b.total == 10.0
        with pytest.raises(ValueError):
            BudgetProposal({"c1": -1.0}, {}, "budget_arbitrage", "1")
        with pytest.raises(ValueError):
            BudgetProposal({"c1": float("inf")}, {}, "budget_arbitrage", "1")

    def test_weights_from_array_sums_to_one(self) -> None:
        w = weights_from_array(["a", "b", "c"], [1.0, 1.0, 1.0])
        validate_weights(w)
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-15)
        with pytest.raises(ValueError):
            weights_from_array(["a"], [0.0])
        with pytest.raises(ValueError):
            weights_from_array(["a", "b"], [1.0])

    def test_campaign_stats_validation(self) -> None:
        c = CampaignStats("c", 100.0, 200.0, 50.0, 300.0, 100.0, 0.5)
        assert c.roi == pytest.approx(2.0)
        assert CampaignStats("c", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0).roi is None
        with pytest.raises(ValueError):
            CampaignStats("c", 100.0, 200.0, 50.0, 300.0, 100.0, 1.5)
        with pytest.raises(ValueError):
            CampaignStats("c", -1.0, 200.0, 50.0, 300.0, 100.0, 0.5)


def test_protocols_are_satisfied() -> None:
    for algo in (ThompsonSampling(), UCBAllocation(), TrafficOptimizer()):
        assert isinstance(algo, AllocationAlgorithm)
    assert isinstance(BudgetArbitrage(), BudgetAlgorithm)


class TestAliasSampler:
    WEIGHTS = {"a": 0.5, "b": 0.2, "c": 0.15, "d": 0.1, "e": 0.05, "zero": 0.0}

    def test_table_reproduces_weights_exactly(self) -> None:
        rng = np.random.default_rng(3)
        for k in (1, 2, 3, 7, 50):
            raw = rng.dirichlet(np.ones(k))
            w = {f"x{i}": float(v) for i, v in enumerate(raw)}
            s = AliasSampler(w)
            implied: dict[str, float] = {}
            n = len(s._table)
            for thr, arm, _, alias, _ in s._table:
                implied[arm] = implied.get(arm, 0.0) + thr / n
                implied[alias] = implied.get(alias, 0.0) + (1.0 - thr) / n
            for arm, p in w.items():
                assert implied.get(arm, 0.0) == pytest.approx(p, abs=1e-12)

    def test_sample_returns_probability_of_the_arm(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        for u1 in np.linspace(0, 0.999, 37):
            for u2 in np.linspace(0, 0.999, 11):
                arm, p = s.sample(float(u1), float(u2))
                assert p == pytest.approx(self.WEIGHTS[arm])
                assert arm != "zero"
        assert s.sample(1.0, 0.5)[0] in self.WEIGHTS  # u1 == 1.0 is tolerated

    def test_choose_frequencies_chi_square(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        rnd = random.Random(12345)
        n = 200_000
        counts = Counter(s.choose(rnd)[0] for _ in range(n))
        assert counts["zero"] == 0
        arms = [a for a in self.WEIGHTS if self.WEIGHTS[a] > 0]
        stat = chi2_statistic([counts[a] for a in arms], [self.WEIGHTS[a] for a in arms])
        assert stat < chi2_critical(len(arms) - 1)

    def test_sample_with_two_uniforms_chi_square(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        rnd = random.Random(7)
        counts = Counter(s.sample(rnd.random(), rnd.random())[0] for _ in range(100_000))
        arms = [a for a in self.WEIGHTS if self.WEIGHTS[a] > 0]
        assert chi2_statistic([counts[a] for a in arms], [self.WEIGHTS[a] for a in arms]) < chi2_critical(4)

    def test_unnormalised_weights_are_normalised(self) -> None:
        s = AliasSampler({"a": 3.0, "b": 1.0})
        assert s.weights == {"a": 0.75, "b": 0.25}
        assert s.probability("a") == 0.75 and s.probability("missing") == 0.0
        assert s.arm_ids == ("a", "b")

    @pytest.mark.parametrize("weights", [{}, {"a": 0.0}, {"a": -1.0, "b": 2.0}, {"a": float("nan")}])
    def test_invalid_weights(self, weights: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            AliasSampler(weights)

    def test_sample_eligible_renormalises(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        eligible = {"b", "d", "zero"}
        mass = 0.2 + 0.1
        rnd = random.Random(99)
        counts: Counter[str] = Counter()
        for _ in range(60_000):
            got = s.sample_eligible(eligible, rnd)
            assert got is not None
            arm, p = got
            assert arm in eligible
            assert p == pytest.approx(self.WEIGHTS[arm] / mass)
            counts[arm] += 1
        assert counts["zero"] == 0
        stat = chi2_statistic([counts["b"], counts["d"]], [0.2 / mass, 0.1 / mass])
        assert stat < chi2_critical(1)

    def test_sample_eligible_rare_mass_uses_exact_fallback(self) -> None:
        w = {"big": 0.999, "tiny1": 0.0006, "tiny2": 0.0004}
        s = AliasSampler(w)
        rnd = random.Random(5)
        counts: Counter[str] = Counter()
        for _ in range(20_000):
            got = s.sample_eligible(lambda a: a != "big", rnd)
            assert got is not None
            counts[got[0]] += 1
        assert chi2_statistic([counts["tiny1"], counts["tiny2"]], [0.6, 0.4]) < chi2_critical(1)

    def test_sample_eligible_none_and_all(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        assert s.sample_eligible(set(), random.Random(1)) is None
        assert s.sample_eligible({"zero"}, random.Random(1)) is None
        got = s.sample_eligible(lambda a: True, random.Random(1))
        assert got is not None and got[1] == pytest.approx(self.WEIGHTS[got[0]])
        assert s.sample_eligible(frozenset(self.WEIGHTS)) is not None

    def test_sample_indices_vectorised_chi_square(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        idx = s.sample_indices(200_000, np.random.default_rng(0))
        counts = np.bincount(idx, minlength=len(self.WEIGHTS))
        probs = [self.WEIGHTS[a] for a in s.arm_ids]
        assert counts[s.arm_ids.index("zero")] == 0
        assert chi2_statistic(counts.tolist(), probs) < chi2_critical(4)

    def test_choose_is_deterministic_given_seed(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        a = [s.choose(random.Random(42)) for _ in range(3)]
        r1, r2 = random.Random(8), random.Random(8)
        assert [s.choose(r1) for _ in range(100)] == [choose_arm(s, r2) for _ in range(100)]
        assert a[0] == a[1] == a[2]

    def test_single_arm(self) -> None:
        s = AliasSampler({"only": 1.0})
        assert s.choose() == ("only", 1.0)
        assert s.sample(0.999, 0.999) == ("only", 1.0)

    @pytest.mark.parametrize("rnd", [random.Random(0), None], ids=["one uniform", "pre-drawn"])
    def test_choice_is_fast(self, rnd: random.Random | None) -> None:
        s = AliasSampler({f"o{i}": 1.0 + i for i in range(10)})
        choose = s.choose
        n = 100_000
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                choose(rnd)
            best = min(best, (time.perf_counter() - t0) / n)
        assert best < 2e-6, f"{best * 1e6:.2f} us per choice"

    @property_settings(60)
    @given(st.lists(st.floats(min_value=0.0, max_value=1e3, allow_nan=False), min_size=1, max_size=30))
    def test_property_samples_only_positive_arms(self, raw: list[float]) -> None:
        if sum(raw) <= 0:
            raw = [*raw, 1.0]
        w = {f"a{i}": v for i, v in enumerate(raw)}
        s = AliasSampler(w)
        total = sum(raw)
        rnd = random.Random(0)
        for _ in range(50):
            arm, p = s.choose(rnd)
            assert w[arm] > 0
            assert p == pytest.approx(w[arm] / total)


@pytest.fixture
def seeded_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed this process's stream of pre-drawn choices, so that the frequency tests are stable."""
    monkeypatch.setattr(base._PROCESS_STREAM, "generator", np.random.default_rng(2024))
    monkeypatch.setattr(base._PROCESS_STREAM, "pid", os.getpid())


@pytest.mark.usefixtures("seeded_choices")
class TestPreDrawnChoices:
    """`AliasSampler.choose()` without an rng: the click path's pre-drawn choices."""

    WEIGHTS = TestAliasSampler.WEIGHTS
    ARMS = ["a", "b", "c", "d", "e"]  # the arms with positive weight

    def test_frequencies_chi_square_and_exact_probabilities(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        counts: Counter[str] = Counter()
        for _ in range(200_000):
            arm, p = s.choose()
            assert p == s.probability(arm)  # exactly the allocation's probability
            counts[arm] += 1
        assert counts["zero"] == 0
        stat = chi2_statistic([counts[a] for a in self.ARMS], [self.WEIGHTS[a] for a in self.ARMS])
        assert stat < chi2_critical(len(self.ARMS) - 1)

    def test_blocks_grow_to_the_largest_block(self) -> None:
        s = AliasSampler(self.WEIGHTS, max_block=256)
        sizes = []
        for _ in range(6):
            s.choose()
            sizes.append(len(s._buffer) + 1)
            for _ in range(len(s._buffer)):
                s.choose()
        assert sizes == [64, 128, 256, 256, 256, 256]
        with pytest.raises(ValueError):
            AliasSampler(self.WEIGHTS, max_block=0)

    def test_consecutive_choices_are_independent(self) -> None:
        s = AliasSampler({"a": 0.5, "b": 0.5}, max_block=100)
        draws = [s.choose()[0] for _ in range(100_001)]
        pairs = Counter(zip(draws, draws[1:], strict=False))
        assert chi2_statistic([pairs[(x, y)] for x in "ab" for y in "ab"], [0.25] * 4) < chi2_critical(3)

    def test_an_explicit_rng_keeps_the_one_uniform_path(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        r1, r2 = random.Random(3), random.Random(3)
        expected = [s.choose(r1) for _ in range(50)]
        s.choose()  # the pre-drawn choices do not touch a given rng's sequence
        assert [s.choose(r2) for _ in range(50)] == expected
        assert expected[0] == s.choose(random.Random(3))

    def test_sample_eligible_is_the_exact_conditional_distribution(self) -> None:
        s = AliasSampler(self.WEIGHTS)
        eligible = {"b", "d", "zero"}
        mass = 0.2 + 0.1
        counts: Counter[str] = Counter()
        for _ in range(60_000):
            got = s.sample_eligible(eligible)
            assert got is not None
            arm, p = got
            assert arm in eligible
            assert p == pytest.approx(self.WEIGHTS[arm] / mass, rel=1e-12)
            counts[arm] += 1
        assert counts["zero"] == 0
        assert chi2_statistic([counts["b"], counts["d"]], [0.2 / mass, 0.1 / mass]) < chi2_critical(1)

    def test_sample_eligible_rare_mass_uses_exact_fallback(self) -> None:
        w = {"big": 0.999, "tiny1": 0.0006, "tiny2": 0.0004}
        s = AliasSampler(w)
        counts: Counter[str] = Counter()
        for _ in range(20_000):
            got = s.sample_eligible(lambda a: a != "big")
            assert got is not None
            assert got[1] == pytest.approx(w[got[0]] / 0.001)
            counts[got[0]] += 1
        assert chi2_statistic([counts["tiny1"], counts["tiny2"]], [0.6, 0.4]) < chi2_critical(1)
        assert s.sample_eligible(set()) is None

    def test_threads_share_the_choices_without_errors(self) -> None:
        # Tiny blocks, so that the threads often find the block empty at the same time.
        s = AliasSampler(self.WEIGHTS, max_block=16)
        per_thread = 25_000
        results: list[Counter[str]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def click() -> None:
            try:
                start.wait()
                results.append(Counter(s.choose()[0] for _ in range(per_thread)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=click) for _ in range(8)]
        previous = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(previous)
        assert errors == []
        counts = sum(results, Counter[str]())
        assert sum(counts.values()) == 8 * per_thread
        stat = chi2_statistic([counts[a] for a in self.ARMS], [self.WEIGHTS[a] for a in self.ARMS])
        assert stat < chi2_critical(len(self.ARMS) - 1)

    def test_a_generator_from_another_process_is_replaced(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # As after a fork that did not run the fork hooks: the next block comes from a new generator.
        inherited = np.random.default_rng(0)
        monkeypatch.setattr(base._PROCESS_STREAM, "generator", inherited)
        monkeypatch.setattr(base._PROCESS_STREAM, "pid", os.getpid() + 1)
        AliasSampler(self.WEIGHTS).choose()
        assert base._PROCESS_STREAM.generator is not inherited
        assert base._PROCESS_STREAM.pid == os.getpid()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_repeats_its_parents_choices() -> None:
    s = AliasSampler({f"o{i}": 1.0 for i in range(10)})
    for _ in range(500):
        s.choose()  # the parent now holds a block of pre-drawn choices
    assert len(s._buffer) > 400
    n = 1000  # more than a block: the child's refills are its own too
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its choices and leave without running pytest's teardown
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as out:
                json.dump([s.choose()[0] for _ in range(n)], out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.load(pipe)
    assert os.waitpid(pid, 0)[1] == 0
    parent = [s.choose()[0] for _ in range(n)]
    assert len(child) == n
    # Identical streams would agree on every choice; independent ones agree on about 1 in 10.
    agree = sum(a == b for a, b in zip(parent, child, strict=True))
    assert agree < n // 5
