"""Projections that keep weight and budget vectors inside bounds.

* :func:`project_box_simplex` is the exact Euclidean projection onto
  ``{x : lo <= x <= hi, sum(x) = total}`` (the operation a server performs for a policy's
  ``clamp`` obligation).
* :func:`apply_floor` lifts every share to a minimum and scales the others down proportionally.
* :func:`govern_allocation` applies the *default RCP limits* used by the benchmark and as a safe
  default: every weight >= ``floor`` and, relative to the allocation in force, no weight moves by
  more than ``max_change`` (absolute) per cycle, the result summing to 1. When the two limits
  cannot both hold (e.g. a new arm), the floor wins and the move limit is relaxed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def project_box_simplex(values: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike, total: float = 1.0) -> FloatArray:
    """Euclidean projection of ``values`` onto ``{x: lo <= x <= hi, sum x = total}``.

    The solution is ``clip(values - lam, lo, hi)`` for the scalar ``lam`` at which the sum equals
    ``total``; the sum is piecewise linear and non-increasing in ``lam``, so ``lam`` is found exactly
    between two sorted breakpoints. Raises ``ValueError`` when the set is empty.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64), v.shape).astype(np.float64)
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64), v.shape).astype(np.float64)
    if np.any(lo_a > hi_a + 1e-12):
        raise ValueError("lower bounds must not exceed upper bounds")
    hi_a = np.maximum(hi_a, lo_a)
    slo, shi = float(lo_a.sum()), float(hi_a.sum())
    tol = 1e-9 * max(1.0, abs(total))
    if total < slo - tol or total > shi + tol:
        raise ValueError(f"infeasible: total {total} outside [{slo}, {shi}]")
    if total <= slo:
        return lo_a.copy()
    if total >= shi:
        return hi_a.copy()
    bps = np.unique(np.concatenate([v - lo_a, v - hi_a]))
    sums = np.clip(v[None, :] - bps[:, None], lo_a, hi_a).sum(axis=1)  # non-increasing in bps
    # Largest breakpoint whose sum is still >= total, and the next one (sum < total).
    j = int(np.searchsorted(-sums, -total, side="right")) - 1
    j = min(max(j, 0), len(bps) - 2) if len(bps) > 1 else 0
    if len(bps) == 1:
        lam = float(bps[0])
    else:
        a, b = float(bps[j]), float(bps[j + 1])
        sa, sb = float(sums[j]), float(sums[j + 1])
        lam = a if sa == sb else a + (sa - total) * (b - a) / (sa - sb)
    out = np.clip(v - lam, lo_a, hi_a)
    # Remove the last rounding residue on coordinates strictly inside their bounds.
    resid = total - float(out.sum())
    free = (out > lo_a) & (out < hi_a)
    if resid != 0.0 and np.any(free):
        out[free] += resid / int(free.sum())
        out = np.clip(out, lo_a, hi_a)
    return out


def apply_floor(weights: npt.ArrayLike, floor: float) -> FloatArray:
    """Give every share at least ``floor``, scaling the other shares down proportionally.

    The input is normalised first. If ``floor * K >= 1`` the result is uniform.
    """
    w = np.clip(np.asarray(weights, dtype=np.float64).ravel(), 0.0, None)
    k = w.size
    if k == 0:
        raise ValueError("weights must not be empty")
    total = float(w.sum())
    w = w / total if total > 0 else np.full(k, 1.0 / k)
    if floor <= 0.0:
        return w
    if floor * k >= 1.0:
        return np.full(k, 1.0 / k)
    fixed = w < floor
    for _ in range(k + 1):
        free = ~fixed
        remaining = 1.0 - floor * int(fixed.sum())
        free_mass = float(w[free].sum())
        out = np.where(fixed, floor, 0.0)
        if free_mass > 0:
            out[free] = w[free] * (remaining / free_mass)
        else:
            out[free] = remaining / int(free.sum())
        newly = free & (out < floor)
        if not np.any(newly):
            return out
        fixed |= newly
    return out  # pragma: no cover - the loop fixes at least one arm per pass


def govern_allocation(
    proposed: Mapping[str, float],
    previous: Mapping[str, float] | None,
    floor: float,
    max_change: float | None,
) -> dict[str, float]:
    """Apply the default RCP limits (floor + max change per cycle) to a proposed allocation.

    Bounds per arm: ``lo = max(floor, prev - max_change)``, ``hi = min(1, prev + max_change)``
    (``prev`` = 0 for arms absent from ``previous``); the proposal is projected onto those bounds
    with sum 1 (:func:`project_box_simplex`). If ``K * floor > 1`` the floor becomes ``1/K``.
    """
    arms: Sequence[str] = list(proposed)
    k = len(arms)
    if k == 0:
        raise ValueError("proposed allocation must not be empty")
    p = np.array([float(proposed[a]) for a in arms])
    floor = min(max(floor, 0.0), 1.0 / k)
    lo = np.full(k, floor)
    hi = np.ones(k)
    if previous is not None and max_change is not None:
        prev = np.array([float(previous.get(a, 0.0)) for a in arms])
        lo = np.maximum(lo, prev - max_change)
        hi = np.minimum(hi, prev + max_change)
        hi = np.maximum(hi, lo)
        if lo.sum() > 1.0:
            lo = np.full(k, floor)
        if hi.sum() < 1.0:
            hi = np.ones(k)
    out = project_box_simplex(p, lo, hi, 1.0)
    return {a: float(x) for a, x in zip(arms, out, strict=True)}
