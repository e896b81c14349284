"""`LinkRoute.choose`, the arm choice of one click, on the path the click handler takes (no rng:
the sampler's pre-drawn choices) and with a seeded rng (reproducible)."""

from __future__ import annotations

import os
import random
from collections import Counter

import numpy as np
import pytest

from algorithms import base
from algorithms.base import AliasSampler
from server.clicks.routing import LinkRoute, Target
from tests.unit.algorithms._helpers import chi2_critical, chi2_statistic

WEIGHTS = {"fr_only": 0.3, "mobile_only": 0.2, "capped": 0.1, "open": 0.4}


@pytest.fixture(autouse=True)
def seeded_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed this process's stream of pre-drawn choices, so that the frequency tests are stable."""
    monkeypatch.setattr(base._PROCESS_STREAM, "generator", np.random.default_rng(11))
    monkeypatch.setattr(base._PROCESS_STREAM, "pid", os.getpid())


def target(
    offer_id: str, countries: tuple[str, ...] = (), devices: tuple[str, ...] = (), capped: bool = False
) -> Target:
    return Target(
        offer_id, f"https://{offer_id}.example/?c={{0}}", True, frozenset(countries), frozenset(devices), capped
    )


def route(targets: dict[str, Target]) -> LinkRoute:
    return LinkRoute(
        link_id="L1",
        slug="split",
        active=True,
        allocation_id=7,
        sampler=AliasSampler(WEIGHTS),
        targets=targets,
        fallback=None,
        unrestricted=all(t.unrestricted for t in targets.values()),
    )


def frequencies_match(counts: Counter[str], expected: dict[str, float]) -> bool:
    arms = sorted(expected)
    return chi2_statistic([counts[a] for a in arms], [expected[a] for a in arms]) < chi2_critical(len(arms) - 1)


def test_an_unrestricted_link_routes_by_the_allocation_with_its_probabilities() -> None:
    r = route({arm: target(arm) for arm in WEIGHTS})
    counts: Counter[str] = Counter()
    for _ in range(50_000):
        choice = r.choose("US", "desktop", frozenset())
        assert choice.target is not None and not choice.is_fallback
        assert choice.probability == pytest.approx(WEIGHTS[choice.target.offer_id], rel=1e-12)
        counts[choice.target.offer_id] += 1
    assert frequencies_match(counts, WEIGHTS)


def test_ineligible_arms_are_skipped_with_the_conditional_probability() -> None:
    r = route(
        {
            "fr_only": target("fr_only", countries=("FR",)),
            "mobile_only": target("mobile_only", devices=("mobile",)),
            "capped": target("capped", capped=True),
            "open": target("open"),
        }
    )
    cases = [
        (("FR", "desktop", frozenset({"capped"})), {"fr_only": 0.3 / 0.7, "open": 0.4 / 0.7}),
        (("US", "mobile", frozenset()), {"mobile_only": 0.2 / 0.7, "capped": 0.1 / 0.7, "open": 0.4 / 0.7}),
        ((None, "desktop", frozenset({"capped"})), {"open": 1.0}),
    ]
    for args, expected in cases:
        counts: Counter[str] = Counter()
        for _ in range(20_000):
            choice = r.choose(*args)
            assert choice.target is not None
            arm = choice.target.offer_id
            assert choice.probability == pytest.approx(expected[arm], rel=1e-12)
            counts[arm] += 1
        assert set(counts) == set(expected)
        if len(expected) > 1:
            assert frequencies_match(counts, expected), (args, counts)


def test_a_seeded_rng_gives_a_reproducible_sequence() -> None:
    r = route({arm: target(arm) for arm in WEIGHTS})
    first = [r.choose("US", "desktop", frozenset(), random.Random(5)) for _ in range(3)]
    r1, r2 = random.Random(9), random.Random(9)
    assert [r.choose("FR", "mobile", frozenset(), r1) for _ in range(100)] == [
        r.choose("FR", "mobile", frozenset(), r2) for _ in range(100)
    ]
    assert first[0] == first[1] == first[2]
