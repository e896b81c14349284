"""Tests of the box-simplex projection, the floor and the default RCP limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from algorithms.constraints import apply_floor, govern_allocation, project_box_simplex

from ._helpers import property_settings

unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _brute_force_projection(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> np.ndarray:
    """Bisection on the shift lam (slow reference)."""
    a, b = float((v - hi).min()) - 1.0, float((v - lo).max()) + 1.0
    for _ in range(200):
        m = 0.5 * (a + b)
        if np.clip(v - m, lo, hi).sum() > total:
            a = m
        else:
            b = m
    return np.clip(v - 0.5 * (a + b), lo, hi)


class TestProjection:
    def test_inside_is_unchanged(self) -> None:
        v = np.array([0.2, 0.3, 0.5])
        np.testing.assert_allclose(project_box_simplex(v, 0.0, 1.0), v, atol=1e-15)

    def test_known_case(self) -> None:
        out = project_box_simplex([0.9, 0.05, 0.05], [0.1, 0.1, 0.1], [0.7, 0.7, 0.7])
        np.testing.assert_allclose(out, [0.7, 0.15, 0.15], atol=1e-12)

    def test_infeasible(self) -> None:
        with pytest.raises(ValueError, match="infeasible"):
            project_box_simplex([0.5, 0.5], [0.6, 0.6], [1.0, 1.0])
        with pytest.raises(ValueError):
            project_box_simplex([0.5, 0.5], [0.6, 0.0], [0.5, 1.0])

    @property_settings(150)
    @given(
        st.lists(st.tuples(st.floats(-2, 2), unit_floats, unit_floats), min_size=1, max_size=12),
        st.floats(min_value=0.0, max_value=1.0),
    )
    def test_matches_bisection_and_is_feasible(self, rows: list[tuple[float, float, float]], frac: float) -> None:
        v = np.array([r[0] for r in rows])
        lo = np.array([min(r[1], r[2]) for r in rows])
        hi = np.array([max(r[1], r[2]) for r in rows])
        total = float(lo.sum() + frac * (hi.sum() - lo.sum()))
        out = project_box_simplex(v, lo, hi, total)
        assert np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
        assert out.sum() == pytest.approx(total, abs=1e-9)
        ref = _brute_force_projection(v, lo, hi, total)
        # Same objective value (the projection is unique, so also the same point).
        np.testing.assert_allclose(out, ref, atol=1e-7)


class TestFloor:
    def test_floor_lifts_and_scales_proportionally(self) -> None:
        out = apply_floor([0.9, 0.08, 0.02], 0.05)
        assert out[2] == pytest.approx(0.05)
        assert out.sum() == pytest.approx(1.0)
        assert out[0] / out[1] == pytest.approx(0.9 / 0.08)

    def test_floor_too_large_gives_uniform(self) -> None:
        np.testing.assert_allclose(apply_floor([1.0, 0.0, 0.0], 0.5), [1 / 3] * 3)

    def test_zero_input_is_uniform(self) -> None:
        np.testing.assert_allclose(apply_floor([0.0, 0.0], 0.0), [0.5, 0.5])

    @property_settings(100)
    @given(st.lists(unit_floats, min_size=1, max_size=20), st.floats(min_value=0.0, max_value=0.5))
    def test_property(self, raw: list[float], floor: float) -> None:
        out = apply_floor(raw, floor)
        assert out.sum() == pytest.approx(1.0)
        assert np.all(out >= min(floor, 1.0 / len(raw)) - 1e-12)


class TestGovern:
    def test_limits_move_and_floor(self) -> None:
        prev = {"a": 0.5, "b": 0.3, "c": 0.2}
        out = govern_allocation({"a": 1.0, "b": 0.0, "c": 0.0}, prev, 0.01, 0.25)
        assert sum(out.values()) == pytest.approx(1.0)
        assert out["a"] == pytest.approx(0.75)
        for arm in prev:
            assert abs(out[arm] - prev[arm]) <= 0.25 + 1e-12
            assert out[arm] >= 0.01 - 1e-12

    def test_new_arm_floor_wins(self) -> None:
        out = govern_allocation({"a": 0.5, "new": 0.5}, {"a": 1.0}, 0.3, 0.25)
        assert out["new"] >= 0.3 - 1e-12
        assert sum(out.values()) == pytest.approx(1.0)

    @property_settings(100)
    @given(st.lists(st.tuples(unit_floats, unit_floats), min_size=1, max_size=15))
    def test_property(self, pairs: list[tuple[float, float]]) -> None:
        p = np.array([a for a, _ in pairs])
        q = np.array([b for _, b in pairs])
        assume(p.sum() > 0 and q.sum() > 0)
        arms = [f"x{i}" for i in range(len(pairs))]
        proposed = dict(zip(arms, (p / p.sum()).tolist(), strict=True))
        prev_vals = apply_floor(q, 0.01)
        prev = dict(zip(arms, prev_vals.tolist(), strict=True))
        out = govern_allocation(proposed, prev, 0.01, 0.25)
        floor = min(0.01, 1.0 / len(arms))
        assert sum(out.values()) == pytest.approx(1.0, abs=1e-9)
        for a in arms:
            assert out[a] >= floor - 1e-9
            assert abs(out[a] - prev[a]) <= 0.25 + 1e-9
