"""The clamp obligation: projection onto per-key bounds with a fixed or capped total."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.governance.clamp import ClampError, apply_clamp


def test_weights_are_capped_and_renormalised() -> None:
    params = {"algorithm": "ucb", "weights": {"a": 0.9, "b": 0.05, "c": 0.05}}
    out = apply_clamp(
        params, {"param": "weights", "bounds": {"a": [0.0, 0.6], "b": [0.1, 1], "c": [0.1, 1]}, "total": 1}
    )
    assert out["weights"]["a"] == pytest.approx(0.6)
    assert out["weights"]["b"] == pytest.approx(0.2)
    assert out["weights"]["c"] == pytest.approx(0.2)
    assert sum(out["weights"].values()) == pytest.approx(1.0, abs=1e-12)
    assert out["algorithm"] == "ucb" and params["weights"]["a"] == 0.9  # input left untouched


def test_budgets_respect_total_cap() -> None:
    out = apply_clamp(
        {"budgets": {"x": 700.0, "y": 500.0}},
        {"param": "budgets", "bounds": {"x": [0, 600], "y": [100, 600]}, "total_max": 1000},
    )
    assert out["budgets"]["x"] <= 600
    assert sum(out["budgets"].values()) == pytest.approx(1000)


def test_budgets_under_cap_only_clip() -> None:
    out = apply_clamp(
        {"budgets": {"x": 700.0, "y": 50.0}},
        {"param": "budgets", "bounds": {"x": [0, 600], "y": [100, 600]}, "total_max": 5000},
    )
    assert out["budgets"] == {"x": 600.0, "y": 100.0}


@pytest.mark.parametrize(
    "obligation, message",
    [
        ({}, "must name the param"),
        ({"param": "missing", "bounds": {}}, "not a non-empty mapping"),
        ({"param": "weights", "bounds": {"a": [0.7, 1], "b": [0.7, 1]}, "total": 1}, "admit no vector"),
        ({"param": "weights", "bounds": {"a": [0.9, 0.1]}, "total": 1}, "inverted"),
        ({"param": "weights", "bounds": {"a": "high"}, "total": 1}, "must be \\[low, high\\]"),
        ({"param": "weights", "bounds": "nope", "total": 1}, "no bounds object"),
    ],
)
def test_bad_obligations_are_refused(obligation: dict[str, object], message: str) -> None:
    with pytest.raises(ClampError, match=message):
        apply_clamp({"weights": {"a": 0.5, "b": 0.5}}, obligation)


@given(
    st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=12),
    st.floats(min_value=0.0, max_value=0.08),
    st.floats(min_value=0.3, max_value=1.0),
)
def test_projection_stays_in_bounds_and_sums_to_one(raw: list[float], floor: float, ceiling: float) -> None:
    keys = [f"arm{i}" for i in range(len(raw))]
    if floor * len(keys) > 1 or ceiling * len(keys) < 1:
        return
    total = sum(raw) or 1.0
    weights = {k: v / total for k, v in zip(keys, raw, strict=True)}
    out = apply_clamp(
        {"weights": weights}, {"param": "weights", "bounds": {k: [floor, ceiling] for k in keys}, "total": 1.0}
    )
    assert sum(out["weights"].values()) == pytest.approx(1.0, abs=1e-9)
    for value in out["weights"].values():
        assert floor - 1e-9 <= value <= ceiling + 1e-9
