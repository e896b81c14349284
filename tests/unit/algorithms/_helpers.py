"""Shared helpers for the algorithm unit tests (chi-square critical values, strategies)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from algorithms.base import ArmStats


def chi2_critical(df: int, z: float = 3.719) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.719: p = 1e-4 upper tail)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def chi2_statistic(observed: Sequence[int], expected_probs: Sequence[float]) -> float:
    """Pearson's statistic over cells with positive expected probability."""
    n = sum(observed)
    stat = 0.0
    for o, p in zip(observed, expected_probs, strict=True):
        if p > 0:
            e = n * p
            stat += (o - e) ** 2 / e
    return stat


@st.composite
def arm_stats_lists(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[ArmStats]:
    """Lists of valid ArmStats with unique ids."""
    k = draw(st.integers(min_value=min_size, max_value=max_size))
    out = []
    for i in range(k):
        clicks = draw(st.integers(min_value=0, max_value=100_000))
        conversions = draw(st.integers(min_value=0, max_value=clicks))
        revenue = draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False))
        cost = draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False))
        out.append(ArmStats(f"arm{i}", clicks, conversions, revenue, cost))
    return out


def ev(proposal: object) -> dict[str, Any]:
    """A proposal's evidence, typed for free indexing in assertions."""
    evidence = getattr(proposal, "evidence")  # noqa: B009
    assert isinstance(evidence, dict)
    return evidence


#: Multiplies every property test's example count (e.g. 20 for a local stress run).
EXAMPLES_SCALE = 1


def property_settings(max_examples: int) -> settings:
    """Derandomised Hypothesis settings: the same examples on every run (stable CI), no deadline."""
    return settings(max_examples=max_examples * EXAMPLES_SCALE, deadline=None, derandomize=True, database=None)
