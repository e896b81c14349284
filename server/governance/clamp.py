"""Apply a policy's clamp obligation: the Euclidean projection of a vector onto per-key bounds
and a fixed (or capped) total. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ClampError(ValueError):
    """The clamp obligation cannot be met (malformed, or bounds that admit no vector)."""


def _shift(values: Mapping[str, float], bounds: Mapping[str, tuple[float, float]], lam: float) -> dict[str, float]:
    return {k: min(max(v + lam, bounds[k][0]), bounds[k][1]) for k, v in values.items()}


def _solve(values: Mapping[str, float], bounds: Mapping[str, tuple[float, float]], total: float) -> dict[str, float]:
    """Find lam with sum(clip(v + lam)) == total by bisection (the sum is monotone in lam)."""
    lo_sum = sum(b[0] for b in bounds.values())
    hi_sum = sum(b[1] for b in bounds.values())
    if lo_sum - 1e-9 > total or hi_sum + 1e-9 < total:
        raise ClampError(f"bounds admit no vector with total {total}: lower sum {lo_sum}, upper sum {hi_sum}")
    span = max(abs(v) for v in values.values()) + max(abs(b) for pair in bounds.values() for b in pair) + total
    low, high = -span - 1.0, span + 1.0
    for _ in range(200):
        mid = (low + high) / 2
        if sum(_shift(values, bounds, mid).values()) < total:
            low = mid
        else:
            high = mid
        if high - low < 1e-15:
            break
    result = _shift(values, bounds, (low + high) / 2)
    # Put the rounding residue on the key with the most room so the total is exact.
    residue = total - sum(result.values())
    if residue:
        key = max(result, key=lambda k: (bounds[k][1] - result[k]) if residue > 0 else (result[k] - bounds[k][0]))
        result[key] = min(max(result[key] + residue, bounds[key][0]), bounds[key][1])
    return result


def _bounds(raw: Any, keys: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise ClampError("clamp obligation has no bounds object")
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        pair = raw.get(key)
        if pair is None:
            out[key] = (float("-inf"), float("inf"))
            continue
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int | float) for x in pair)):
            raise ClampError(f"clamp bounds for {key!r} must be [low, high]")
        low, high = float(pair[0]), float(pair[1])
        if low > high + 1e-12:
            raise ClampError(f"clamp bounds for {key!r} are inverted: {low} > {high}")
        out[key] = (low, high)
    return out


def apply_clamp(params: Mapping[str, Any], obligation: Any) -> dict[str, Any]:
    """Return a copy of `params` with the named vector projected into the obligation's bounds."""
    if not isinstance(obligation, dict) or not isinstance(obligation.get("param"), str):
        raise ClampError("clamp obligation must name the param it applies to")
    name = obligation["param"]
    vector = params.get(name)
    if not isinstance(vector, dict) or not vector:
        raise ClampError(f"clamp names param {name!r}, which is not a non-empty mapping")
    values = {str(k): float(v) for k, v in vector.items()}
    bounds = _bounds(obligation.get("bounds"), values)
    if "total" in obligation:
        clamped = _solve(values, bounds, float(obligation["total"]))
    else:
        clamped = {k: min(max(v, bounds[k][0]), bounds[k][1]) for k, v in values.items()}
        cap = obligation.get("total_max")
        if isinstance(cap, int | float) and sum(clamped.values()) > float(cap) + 1e-9:
            clamped = _solve(clamped, bounds, float(cap))
    decimals = obligation.get("decimals")
    if isinstance(decimals, int) and decimals >= 0:
        clamped = {k: round(v, decimals) for k, v in clamped.items()}
    out = dict(params)
    out[name] = clamped
    return out
