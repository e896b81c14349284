"""UCB1 and KL-UCB index policies for Bernoulli rewards (conversion per click).

Indices, with ``n_i`` clicks and ``s_i`` conversions on arm *i* and ``t`` clicks in total:

* UCB1 (Auer et al. 2002): ``s_i/n_i + sqrt(c * ln t / n_i)`` with ``c = 2`` by default.
* KL-UCB (Garivier & Cappé 2011): ``max{q in [p_i, 1] : n_i * kl(p_i, q) <= ln t + c ln ln t}``
  with ``p_i = s_i/n_i``, ``kl`` the Bernoulli KL divergence and ``c = 0`` by default (the choice
  recommended in practice). The bound is solved by Newton's method started above the root (at the
  smallest of three closed-form upper bounds, e.g. Pinsker's ``p + sqrt(d/2)``); ``kl`` is convex
  and increasing in ``q`` on ``[p, 1]``, so the iterates decrease monotonically to the root.
  :func:`kl_upper_bound_bisection` is a slower reference. An arm with no clicks has index ``+inf``.

Per-click forms: :class:`UCB1Policy`, :class:`KLUCBPolicy` (play each arm once, then the argmax).

Batch form :class:`UCBAllocation` (registry name ``ucb``). Allocation rule: every arm gets the
exploration floor ``floor`` (capped at ``1/K``); the remaining ``1 - K*floor`` is split equally
among the arms whose index is maximal (all unexplored arms tie at ``+inf``). This is what a
per-click index policy would do for the next clicks if the indices were frozen, plus the floor
that keeps every arm observed between cycles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from algorithms.base import AllocationProposal, ArmStats, check_unique_arms, weights_from_array
from algorithms.params import ParamSchema, as_float, as_optional_float, as_str, validate_against

FloatArray = npt.NDArray[np.float64]

_EDGE = 1e-12


def kl_bernoulli(p: npt.ArrayLike, q: npt.ArrayLike) -> FloatArray:
    """Bernoulli KL divergence ``kl(p, q)`` (elementwise; ``0 log 0 = 0``; ``+inf`` when undefined)."""
    p_a = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    q_a = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(p_a > 0.0, p_a * np.log(p_a / q_a), 0.0)
        t2 = np.where(p_a < 1.0, (1.0 - p_a) * np.log((1.0 - p_a) / (1.0 - q_a)), 0.0)
    out: FloatArray = np.asarray(np.maximum(t1 + t2, 0.0), dtype=np.float64)
    return out


def kl_upper_bound(p: npt.ArrayLike, d: npt.ArrayLike, tol: float = 1e-12, max_iter: int = 60) -> FloatArray:
    """Largest ``q`` in ``[p, 1]`` with ``kl(p, q) <= d`` (elementwise, Newton from above).

    Starts at the smallest of three upper bounds of the root (Pinsker, ``kl >= (q-p)^2/(2q)`` and
    ``kl >= (1-p) log((1-p)/(1-q)) + p log p``), and iterates on the whole array until no entry moves by more
    than ``tol``. Entries whose root lies within 1e-12 of 1 return that start point.
    """
    p_b, d_b = np.broadcast_arrays(
        np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0), np.maximum(np.asarray(d, dtype=np.float64), 0.0)
    )
    shape = p_b.shape
    p_a = p_b.astype(np.float64).ravel()
    d_a = d_b.astype(np.float64).ravel()
    top = 1.0 - _EDGE
    with np.errstate(divide="ignore", invalid="ignore"):
        # Constant parts of kl(p, q) = p log p + (1-p) log(1-p) - p log q - (1-p) log(1-q).
        const = np.where(p_a > 0.0, p_a * np.log(p_a), 0.0) + np.where(p_a < 1.0, (1.0 - p_a) * np.log1p(-p_a), 0.0)
        q = np.minimum(p_a + np.sqrt(d_a / 2.0), p_a + d_a + np.sqrt(d_a * d_a + 2.0 * p_a * d_a))
        # kl >= (1-p) log((1-p)/(1-q)) + p log p: an upper bound below 1 (exact for p = 0).
        plogp = np.where(p_a > 0.0, p_a * np.log(p_a), 0.0)
        near_one = 1.0 - (1.0 - p_a) * np.exp(-(d_a - plogp) / np.maximum(1.0 - p_a, _EDGE))
        q = np.minimum(q, near_one)
        q = np.clip(q, p_a, top)
        fixed = (d_a <= 0.0) | (p_a >= top)
        q = np.where(fixed, np.minimum(p_a, top), q)
        for _ in range(max_iter):
            f = const - p_a * np.log(q) - (1.0 - p_a) * np.log1p(-q) - d_a
            fp = (q - p_a) / (q * (1.0 - q))
            step = np.where((fp > 0.0) & (f > 0.0) & ~fixed, f / fp, 0.0)
            q = np.maximum(q - step, p_a)
            if not float(np.max(step)) > tol:
                break
    out: FloatArray = np.where(p_a >= top, 1.0, np.where(d_a <= 0.0, p_a, q)).reshape(shape)
    return out


def kl_upper_bound_bisection(p: float, d: float, tol: float = 1e-13) -> float:
    """Reference bisection for :func:`kl_upper_bound` (scalar, slow, simple)."""
    p = min(max(p, 0.0), 1.0)
    if d <= 0.0 or p >= 1.0:
        return p
    lo, hi = p, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if float(kl_bernoulli(p, mid)) <= d:
            lo = mid
        else:
            hi = mid
    return lo


def _exploration_budget(t: npt.ArrayLike, c: float) -> FloatArray:
    t_a = np.maximum(np.asarray(t, dtype=np.float64), 1.0)
    log_t = np.log(t_a)
    out: FloatArray = log_t + c * np.log(np.maximum(log_t, 1.0))
    return out


def kl_ucb_indices(successes: npt.ArrayLike, pulls: npt.ArrayLike, t: npt.ArrayLike, c: float = 0.0) -> FloatArray:
    """KL-UCB indices, elementwise; ``t`` broadcasts (e.g. shape ``(R, 1)`` for ``(R, K)`` counts)."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(pulls, dtype=np.float64)
    budget = _exploration_budget(t, c)
    safe_n = np.maximum(n, 1.0)
    q = kl_upper_bound(s / safe_n, budget / safe_n)
    out: FloatArray = np.where(n > 0, q, np.inf)
    return out


def ucb1_indices(successes: npt.ArrayLike, pulls: npt.ArrayLike, t: npt.ArrayLike, c: float = 2.0) -> FloatArray:
    """UCB1 indices ``mean + sqrt(c ln t / n)``, elementwise; ``+inf`` for arms never pulled."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(pulls, dtype=np.float64)
    t_a = np.maximum(np.asarray(t, dtype=np.float64), 1.0)
    safe_n = np.maximum(n, 1.0)
    out: FloatArray = np.where(n > 0, s / safe_n + np.sqrt(c * np.log(t_a) / safe_n), np.inf)
    return out


class _IndexPolicy:
    """Shared per-click bookkeeping: play each arm once, then the argmax of the index."""

    def __init__(self, arm_ids: Sequence[str]) -> None:
        if len(arm_ids) == 0 or len(set(arm_ids)) != len(arm_ids):
            raise ValueError("arm_ids must be non-empty and unique")
        self.arm_ids: tuple[str, ...] = tuple(arm_ids)
        self._index = {a: i for i, a in enumerate(self.arm_ids)}
        self.pulls = [0] * len(self.arm_ids)
        self.rewards = [0.0] * len(self.arm_ids)
        self.t = 0

    def _index_value(self, i: int, log_budget: float) -> float:
        raise NotImplementedError

    def _budget(self) -> float:
        raise NotImplementedError

    def select_index(self) -> int:
        """Index of the next arm to play."""
        for i, n in enumerate(self.pulls):
            if n == 0:
                return i
        budget = self._budget()
        best_i, best = 0, -math.inf
        for i in range(len(self.pulls)):
            v = self._index_value(i, budget)
            if v > best:
                best, best_i = v, i
        return best_i

    def select(self) -> str:
        """Id of the next arm to play."""
        return self.arm_ids[self.select_index()]

    def update(self, arm: str | int, reward: float) -> None:
        """Record one play of ``arm`` (id or index) with a reward in [0, 1]."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError("reward must be in [0, 1]")
        i = arm if isinstance(arm, int) else self._index[arm]
        self.pulls[i] += 1
        self.rewards[i] += float(reward)
        self.t += 1


class UCB1Policy(_IndexPolicy):
    """Per-click UCB1: ``mean + sqrt(c ln t / n)`` (c = 2 is Auer et al.'s UCB1)."""

    def __init__(self, arm_ids: Sequence[str], *, c: float = 2.0) -> None:
        super().__init__(arm_ids)
        if c < 0:
            raise ValueError("c must be >= 0")
        self.c = c

    def _budget(self) -> float:
        return self.c * math.log(max(self.t, 1))

    def _index_value(self, i: int, log_budget: float) -> float:
        n = self.pulls[i]
        return self.rewards[i] / n + math.sqrt(log_budget / n)


class KLUCBPolicy(_IndexPolicy):
    """Per-click KL-UCB for Bernoulli rewards (exploration ``ln t + c ln ln t``, c = 0 default)."""

    def __init__(self, arm_ids: Sequence[str], *, c: float = 0.0) -> None:
        super().__init__(arm_ids)
        if c < 0:
            raise ValueError("c must be >= 0")
        self.c = c

    def _budget(self) -> float:
        return float(_exploration_budget(self.t, self.c))

    def _index_value(self, i: int, log_budget: float) -> float:
        n = self.pulls[i]
        return float(kl_upper_bound(self.rewards[i] / n, log_budget / n))


class UCBAllocation:
    """Batch UCB (UCB1 or KL-UCB): the argmax-index arm(s) share all but the exploration floor."""

    NAME: ClassVar[str] = "ucb"
    VERSION: ClassVar[str] = "1.0.0"
    DESCRIPTION: ClassVar[str] = (
        "UCB1 / KL-UCB indices on conversions per click; the arm(s) with the highest index get "
        "everything above a per-arm exploration floor."
    )
    PARAMS: ClassVar[ParamSchema] = {
        "variant": {
            "type": "string",
            "default": "kl_ucb",
            "enum": ["ucb1", "kl_ucb"],
            "description": "Index: UCB1 (Hoeffding) or KL-UCB (Bernoulli KL).",
        },
        "exploration": {
            "type": "number",
            "default": None,
            "minimum": 0.0,
            "maximum": 100.0,
            "description": "Exploration constant c (null: 2 for ucb1, 0 for kl_ucb).",
        },
        "floor": {
            "type": "number",
            "default": 0.02,
            "minimum": 0.0,
            "maximum": 0.5,
            "description": "Minimum share of every arm (capped at 1/K).",
        },
    }

    def __init__(self, *, variant: str = "kl_ucb", exploration: float | None = None, floor: float = 0.02) -> None:
        validate_against(self.PARAMS, {"variant": variant, "exploration": exploration, "floor": floor}, self.NAME)
        self.variant = variant
        self.exploration = (2.0 if variant == "ucb1" else 0.0) if exploration is None else float(exploration)
        self.floor = float(floor)

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> UCBAllocation:
        """Build from a (possibly partial) parameter dict, validating it against ``PARAMS``."""
        v = validate_against(cls.PARAMS, params, cls.NAME)
        return cls(
            variant=as_str(v["variant"]),
            exploration=as_optional_float(v["exploration"]),
            floor=as_float(v["floor"]),
        )

    def indices(self, stats: Sequence[ArmStats]) -> FloatArray:
        """Current index of every arm, in ``stats`` order."""
        s = np.array([st.conversions for st in stats], dtype=np.float64)
        n = np.array([st.clicks for st in stats], dtype=np.float64)
        t = float(n.sum())
        if self.variant == "ucb1":
            return ucb1_indices(s, n, t, self.exploration)
        return kl_ucb_indices(s, n, t, self.exploration)

    def propose(
        self,
        stats: Sequence[ArmStats],
        current: Mapping[str, float] | None,
        rng: np.random.Generator,
        *,
        state: Mapping[str, object] | None = None,
    ) -> AllocationProposal:
        """Propose floor for every arm and the rest split over the argmax-index arms (see module doc)."""
        ids = check_unique_arms(stats)
        k = len(ids)
        idx = self.indices(stats)
        top = float(np.max(idx))
        if math.isinf(top):
            winners = np.isinf(idx)
        else:
            winners = idx >= top - 1e-12 * max(1.0, abs(top))
        floor = min(self.floor, 1.0 / k)
        w = np.full(k, floor)
        w[winners] += (1.0 - floor * k) / int(winners.sum())
        weights = weights_from_array(ids, w)
        arms_ev: dict[str, object] = {}
        for i, st in enumerate(stats):
            arms_ev[st.arm_id] = {
                "clicks": st.clicks,
                "conversions": st.conversions,
                "mean": st.conversion_rate,
                "index": None if math.isinf(float(idx[i])) else float(idx[i]),
                "unexplored": st.clicks == 0,
            }
        evidence: dict[str, object] = {
            "method": f"{self.variant}_argmax_with_floor",
            "params": {"variant": self.variant, "exploration": self.exploration, "floor": self.floor},
            "total_clicks": int(sum(st.clicks for st in stats)),
            "arms": arms_ev,
            "winners": [ids[i] for i in np.flatnonzero(winners)],
            "state": None,
        }
        return AllocationProposal(weights, evidence, self.NAME, self.VERSION)
