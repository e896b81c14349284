"""Beta-Bernoulli Thompson sampling on conversions per click.

Two forms:

* :class:`ThompsonSampling` (registry name ``thompson_sampling``) is the *batch* form: the
  proposed allocation is the posterior probability that each arm has the highest conversion rate,
  estimated by Monte Carlo (``n_samples`` joint posterior draws, vectorised). Routing clicks by
  sampling this allocation is exactly per-click Thompson sampling with the posterior frozen for
  the batch.
* :class:`ThompsonPolicy` is the per-click form (sample every posterior, take the argmax), the
  reference policy in ``bench/regret.py``.

Posterior of arm *i*: ``Beta(prior_alpha + s_i, prior_beta + f_i)``, with ``s_i`` the conversions and
``f_i`` the clicks without conversion.

Drifting conversion rates (``gamma`` < 1): counts are discounted once per proposal cycle,
``s_i <- gamma * s_i + new conversions`` and ``f_i <- gamma * f_i + new non-converting clicks``,
where "new" is the increase of the cumulative ``ArmStats`` counters since the previous cycle. The
discounted counts and the cumulative counters they were computed from are kept in
``evidence["state"]``; pass it back as ``state=`` on the next call (see :func:`discounted`).
Without state, or when an arm's counters went backwards (a reset), the arm starts from its full
cumulative counts. With ``gamma == 1`` the cumulative counts are used directly and no state is
needed. Late conversions (a conversion counted in a cycle after its click) can make the
non-converting increment negative; the discounted failure count is clipped at 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from algorithms.base import AllocationProposal, ArmStats, check_unique_arms, weights_from_array
from algorithms.constraints import apply_floor
from algorithms.params import ParamSchema, as_float, as_int, validate_against

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DiscountedCounts:
    """Discounted successes/failures of one arm plus the cumulative counters they include."""

    successes: float
    failures: float
    clicks_seen: int
    conversions_seen: int

    def to_json(self) -> dict[str, float | int]:
        """JSON form stored in ``evidence["state"]["arms"]``."""
        return {
            "s": self.successes,
            "f": self.failures,
            "clicks": self.clicks_seen,
            "conversions": self.conversions_seen,
        }


def _previous_counts(state: Mapping[str, object] | None, arm_id: str) -> DiscountedCounts | None:
    if not state:
        return None
    arms = state.get("arms")
    if not isinstance(arms, Mapping):
        return None
    prev = arms.get(arm_id)
    if not isinstance(prev, Mapping):
        return None
    try:
        s = float(prev["s"])
        f = float(prev["f"])
        clicks = int(prev["clicks"])
        conversions = int(prev["conversions"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(s) and math.isfinite(f)) or min(s, f, clicks, conversions) < 0:
        return None
    return DiscountedCounts(s, f, clicks, conversions)


def discounted(
    stats: Sequence[ArmStats], gamma: float, state: Mapping[str, object] | None = None
) -> dict[str, DiscountedCounts]:
    """Discounted success/failure counts per arm for this cycle (see the module docstring)."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    out: dict[str, DiscountedCounts] = {}
    for st in stats:
        prev = None if gamma == 1.0 else _previous_counts(state, st.arm_id)
        if prev is None or st.clicks < prev.clicks_seen or st.conversions < prev.conversions_seen:
            out[st.arm_id] = DiscountedCounts(
                float(st.conversions), float(st.clicks - st.conversions), st.clicks, st.conversions
            )
            continue
        d_clicks = st.clicks - prev.clicks_seen
        d_conv = st.conversions - prev.conversions_seen
        s = gamma * prev.successes + d_conv
        f = max(0.0, gamma * prev.failures + (d_clicks - d_conv))
        out[st.arm_id] = DiscountedCounts(s, f, st.clicks, st.conversions)
    return out


def prob_best(
    alpha: npt.ArrayLike,
    beta: npt.ArrayLike,
    n_samples: int,
    rng: np.random.Generator,
    max_chunk_elements: int = 1_000_000,
) -> FloatArray:
    """Monte Carlo estimate of P(arm i has the largest draw) for independent Beta posteriors."""
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    k = a.size
    if k == 0 or a.shape != b.shape:
        raise ValueError("alpha and beta must be non-empty and of equal shape")
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    if k == 1:
        return np.ones(1)
    counts = np.zeros(k, dtype=np.int64)
    rows = max(1, max_chunk_elements // k)
    done = 0
    while done < n_samples:
        m = min(rows, n_samples - done)
        draws = rng.beta(a, b, size=(m, k))
        counts += np.bincount(np.argmax(draws, axis=1), minlength=k)
        done += m
    out: FloatArray = counts / float(n_samples)
    return out


def thompson_choices(
    successes: npt.ArrayLike,
    failures: npt.ArrayLike,
    rng: np.random.Generator,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
) -> IntArray:
    """One per-click Thompson choice per row: argmax over the last axis of posterior draws.

    Vectorised over independent replications (shape ``(..., K)``); used by the benchmark.
    """
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    draws = rng.beta(s + prior_alpha, f + prior_beta)
    out: IntArray = np.argmax(draws, axis=-1).astype(np.int64)
    return out


class ThompsonSampling:
    """Batch Thompson sampling: allocation = posterior probability of being the best arm."""

    NAME: ClassVar[str] = "thompson_sampling"
    VERSION: ClassVar[str] = "1.0.0"
    DESCRIPTION: ClassVar[str] = (
        "Beta-Bernoulli Thompson sampling on conversions per click; weights are the Monte Carlo "
        "posterior probabilities that each arm has the best conversion rate."
    )
    PARAMS: ClassVar[ParamSchema] = {
        "prior_alpha": {
            "type": "number",
            "default": 1.0,
            "exclusiveMinimum": 0.0,
            "maximum": 1e6,
            "description": "Beta prior alpha (pseudo-conversions) for every arm.",
        },
        "prior_beta": {
            "type": "number",
            "default": 1.0,
            "exclusiveMinimum": 0.0,
            "maximum": 1e6,
            "description": "Beta prior beta (pseudo non-converting clicks) for every arm.",
        },
        "n_samples": {
            "type": "integer",
            "default": 10_000,
            "minimum": 100,
            "maximum": 1_000_000,
            "description": "Monte Carlo draws from the joint posterior used to estimate P(best).",
        },
        "gamma": {
            "type": "number",
            "default": 1.0,
            "exclusiveMinimum": 0.0,
            "maximum": 1.0,
            "description": "Discount applied to past counts once per cycle (1 = no discount).",
        },
        "floor": {
            "type": "number",
            "default": 0.0,
            "minimum": 0.0,
            "maximum": 0.5,
            "description": "Minimum share per arm in the proposal (capped at 1/K).",
        },
    }

    def __init__(
        self,
        *,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        n_samples: int = 10_000,
        gamma: float = 1.0,
        floor: float = 0.0,
    ) -> None:
        validate_against(
            self.PARAMS,
            {
                "prior_alpha": prior_alpha,
                "prior_beta": prior_beta,
                "n_samples": n_samples,
                "gamma": gamma,
                "floor": floor,
            },
            self.NAME,
        )
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.n_samples = int(n_samples)
        self.gamma = float(gamma)
        self.floor = float(floor)

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> ThompsonSampling:
        """Build from a (possibly partial) parameter dict, validating it against ``PARAMS``."""
        v = validate_against(cls.PARAMS, params, cls.NAME)
        return cls(
            prior_alpha=as_float(v["prior_alpha"]),
            prior_beta=as_float(v["prior_beta"]),
            n_samples=as_int(v["n_samples"]),
            gamma=as_float(v["gamma"]),
            floor=as_float(v["floor"]),
        )

    def posterior(
        self, stats: Sequence[ArmStats], state: Mapping[str, object] | None = None
    ) -> tuple[FloatArray, FloatArray, dict[str, DiscountedCounts]]:
        """Posterior Beta parameters (alpha, beta) per arm, in ``stats`` order, and the new counts."""
        check_unique_arms(stats)
        counts = discounted(stats, self.gamma, state)
        alpha = np.array([self.prior_alpha + counts[s.arm_id].successes for s in stats])
        beta = np.array([self.prior_beta + counts[s.arm_id].failures for s in stats])
        return alpha, beta, counts

    def propose(
        self,
        stats: Sequence[ArmStats],
        current: Mapping[str, float] | None,
        rng: np.random.Generator,
        *,
        state: Mapping[str, object] | None = None,
    ) -> AllocationProposal:
        """Propose weights = P(best) (Monte Carlo), floored at ``floor``; see the module docstring."""
        ids = check_unique_arms(stats)
        alpha, beta, counts = self.posterior(stats, state)
        p_best = prob_best(alpha, beta, self.n_samples, rng)
        weights = weights_from_array(ids, apply_floor(p_best, self.floor))
        means = alpha / (alpha + beta)
        arms_ev: dict[str, object] = {}
        for i, st in enumerate(stats):
            pb = float(p_best[i])
            arms_ev[st.arm_id] = {
                "clicks": st.clicks,
                "conversions": st.conversions,
                "posterior_alpha": float(alpha[i]),
                "posterior_beta": float(beta[i]),
                "posterior_mean": float(means[i]),
                "prob_best": pb,
                "mc_stderr": math.sqrt(pb * (1.0 - pb) / self.n_samples),
            }
        evidence: dict[str, object] = {
            "method": "beta_bernoulli_prob_best_monte_carlo",
            "params": {
                "prior_alpha": self.prior_alpha,
                "prior_beta": self.prior_beta,
                "n_samples": self.n_samples,
                "gamma": self.gamma,
                "floor": self.floor,
            },
            "arms": arms_ev,
            "best_arm": ids[int(np.argmax(p_best))],
            "max_abs_change": _max_abs_change(weights, current),
            "state": {"gamma": self.gamma, "arms": {a: c.to_json() for a, c in counts.items()}},
        }
        return AllocationProposal(weights, evidence, self.NAME, self.VERSION)


def _max_abs_change(weights: Mapping[str, float], current: Mapping[str, float] | None) -> float | None:
    if current is None:
        return None
    keys = set(weights) | set(current)
    return max(abs(weights.get(k, 0.0) - float(current.get(k, 0.0))) for k in keys)


class ThompsonPolicy:
    """Per-click Beta-Bernoulli Thompson sampling (pure Python, ``random.betavariate``)."""

    def __init__(
        self,
        arm_ids: Sequence[str],
        *,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if len(arm_ids) == 0 or len(set(arm_ids)) != len(arm_ids):
            raise ValueError("arm_ids must be non-empty and unique")
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError("priors must be > 0")
        self.arm_ids: tuple[str, ...] = tuple(arm_ids)
        self._index = {a: i for i, a in enumerate(self.arm_ids)}
        self.alpha = [float(prior_alpha)] * len(self.arm_ids)
        self.beta = [float(prior_beta)] * len(self.arm_ids)
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - simulation, not crypto

    def select_index(self) -> int:
        """Index of the arm with the largest posterior draw."""
        bv = self._rng.betavariate
        best_i = 0
        best = -1.0
        for i, (a, b) in enumerate(zip(self.alpha, self.beta, strict=True)):
            x = bv(a, b)
            if x > best:
                best, best_i = x, i
        return best_i

    def select(self) -> str:
        """Arm id with the largest posterior draw."""
        return self.arm_ids[self.select_index()]

    def update(self, arm: str | int, reward: bool | int | float) -> None:
        """Record one click on ``arm`` (id or index) with reward 1 (conversion) or 0."""
        i = arm if isinstance(arm, int) else self._index[arm]
        if reward:
            self.alpha[i] += 1.0
        else:
            self.beta[i] += 1.0
