"""Shared data types, algorithm protocols and the click-path sampler (:class:`AliasSampler`).

Conventions used by every algorithm in this package:

* ``ArmStats`` are *cumulative* counters for one arm (offer) of one link.
* An algorithm never executes anything: it returns a proposal (``AllocationProposal`` or
  ``BudgetProposal``) whose ``evidence`` is JSON-serialisable (plain ``dict``/``list``/``str``/
  ``float``/``int``/``bool``/``None``) so the server can store it and send it to the policy engine.
* Algorithms that keep state across cycles (discounted counts, smoothed EPC, pacing multipliers)
  put it in ``evidence["state"]``; the caller passes that object back as ``state=`` on the next
  call. Passing ``state=None`` always works (the algorithm starts fresh).
"""

from __future__ import annotations

import math
import os
import random
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from numbers import Integral
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

#: Tolerance used when checking that a weight vector sums to one.
WEIGHT_SUM_TOLERANCE = 1e-6

_random_module_random = random.random

#: Largest block of pre-drawn choices an :class:`AliasSampler` keeps (blocks start small and double).
CHOICE_BLOCK = 4096
_FIRST_BLOCK = 64


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    as_int = int(value)
    if as_int < 0:
        raise ValueError(f"{name} must be >= 0, got {as_int}")
    return as_int


def _check_amount(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a number, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {as_float}")
    return as_float


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Cumulative counters for one arm: clicks, conversions, revenue and (optional) cost."""

    arm_id: str
    clicks: int
    conversions: int
    revenue: float
    cost: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.arm_id, str) or not self.arm_id:
            raise ValueError("arm_id must be a non-empty string")
        clicks = _check_count("clicks", self.clicks)
        conversions = _check_count("conversions", self.conversions)
        if conversions > clicks:
            raise ValueError(f"conversions ({conversions}) must be <= clicks ({clicks}) for arm {self.arm_id}")
        object.__setattr__(self, "clicks", clicks)
        object.__setattr__(self, "conversions", conversions)
        object.__setattr__(self, "revenue", _check_amount("revenue", self.revenue))
        object.__setattr__(self, "cost", _check_amount("cost", self.cost))

    @property
    def conversion_rate(self) -> float:
        """Conversions per click (0.0 when there are no clicks)."""
        return self.conversions / self.clicks if self.clicks else 0.0

    @property
    def epc(self) -> float:
        """Earnings per click: revenue / clicks (0.0 when there are no clicks)."""
        return self.revenue / self.clicks if self.clicks else 0.0


def check_unique_arms(stats: Sequence[ArmStats]) -> list[str]:
    """Return the arm ids in order; raise ``ValueError`` if empty or if an id repeats."""
    if len(stats) == 0:
        raise ValueError("at least one arm is required")
    ids = [s.arm_id for s in stats]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate arm ids in {ids}")
    return ids


def validate_weights(weights: Mapping[str, float]) -> None:
    """Raise ``ValueError`` unless ``weights`` is a non-empty probability vector."""
    if not weights:
        raise ValueError("weights must not be empty")
    total = 0.0
    for arm, w in weights.items():
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"weight keys must be non-empty strings, got {arm!r}")
        wf = float(w)
        if not math.isfinite(wf) or wf < 0.0 or wf > 1.0 + WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"weight of {arm} must be in [0, 1], got {w!r}")
        total += wf
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"weights must sum to 1, got {total!r}")


def weights_from_array(arm_ids: Sequence[str], values: npt.ArrayLike) -> dict[str, float]:
    """Turn a non-negative vector into a ``{arm: weight}`` dict that sums to 1 (exactly in floats)."""
    arr = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    if arr.shape != (len(arm_ids),):
        raise ValueError(f"expected {len(arm_ids)} values, got shape {arr.shape}")
    total = float(arr.sum())
    if not math.isfinite(total) or total <= 0.0:
        raise ValueError("weights must have a positive, finite sum")
    arr = arr / total
    # Push the rounding residue onto the largest weight so the sum is 1 up to one ulp.
    arr[int(np.argmax(arr))] += 1.0 - float(arr.sum())
    return {a: float(max(w, 0.0)) for a, w in zip(arm_ids, arr, strict=True)}


@dataclass(frozen=True, slots=True)
class AllocationProposal:
    """A proposed probability vector over arms, with the evidence that justifies it."""

    weights: dict[str, float]
    evidence: dict[str, object] = field(default_factory=dict)
    algorithm: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        validate_weights(self.weights)
        if not self.algorithm:
            raise ValueError("algorithm must be a non-empty string")

    @property
    def state(self) -> Mapping[str, object] | None:
        """``evidence["state"]``: pass it back as ``state=`` on the next cycle (``None`` if absent)."""
        st = self.evidence.get("state")
        return st if isinstance(st, Mapping) else None

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form (JSON-serialisable when the evidence is)."""
        return {
            "weights": dict(self.weights),
            "evidence": self.evidence,
            "algorithm": self.algorithm,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class BudgetProposal:
    """Proposed daily budgets per campaign (non-negative amounts), with evidence."""

    budgets: dict[str, float]
    evidence: dict[str, object] = field(default_factory=dict)
    algorithm: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        for campaign, amount in self.budgets.items():
            if not isinstance(campaign, str) or not campaign:
                raise ValueError(f"budget keys must be non-empty strings, got {campaign!r}")
            _check_amount(f"budget of {campaign}", amount)
        if not self.algorithm:
            raise ValueError("algorithm must be a non-empty string")

    @property
    def state(self) -> Mapping[str, object] | None:
        """``evidence["state"]``: pass it back as ``state=`` on the next cycle (``None`` if absent)."""
        st = self.evidence.get("state")
        return st if isinstance(st, Mapping) else None

    @property
    def total(self) -> float:
        """Sum of the proposed budgets."""
        return float(sum(self.budgets.values()))

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form (JSON-serialisable when the evidence is)."""
        return {
            "budgets": dict(self.budgets),
            "evidence": self.evidence,
            "algorithm": self.algorithm,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class CampaignStats:
    """Today's state of one campaign for budget reallocation (amounts in one currency).

    ``budget`` is the daily budget in force, ``daily_cap`` the hard daily maximum, ``spend_today``
    what has been spent since the start of the day, ``revenue`` and ``cost`` the attributed totals
    over the ROI window, and ``hours_elapsed_fraction`` the fraction of the day elapsed (0..1).
    """

    campaign_id: str
    budget: float
    daily_cap: float
    spend_today: float
    revenue: float
    cost: float
    hours_elapsed_fraction: float

    def __post_init__(self) -> None:
        if not isinstance(self.campaign_id, str) or not self.campaign_id:
            raise ValueError("campaign_id must be a non-empty string")
        for name in ("budget", "daily_cap", "spend_today", "revenue", "cost", "hours_elapsed_fraction"):
            object.__setattr__(self, name, _check_amount(name, getattr(self, name)))
        if self.hours_elapsed_fraction > 1.0:
            raise ValueError(f"hours_elapsed_fraction must be in [0, 1], got {self.hours_elapsed_fraction}")

    @property
    def roi(self) -> float | None:
        """(revenue - cost) / cost, or ``None`` without cost."""
        return (self.revenue - self.cost) / self.cost if self.cost > 0 else None


@runtime_checkable
class AllocationAlgorithm(Protocol):
    """An algorithm that proposes a traffic allocation (probability vector over arms).

    ``current`` is the allocation in force (or ``None``); ``state`` is ``evidence["state"]`` of
    the previous proposal of the same algorithm for the same link (or ``None``).
    """

    def propose(
        self,
        stats: Sequence[ArmStats],
        current: Mapping[str, float] | None,
        rng: np.random.Generator,
        *,
        state: Mapping[str, object] | None = None,
    ) -> AllocationProposal: ...


@runtime_checkable
class BudgetAlgorithm(Protocol):
    """An algorithm that proposes campaign budgets; see :mod:`algorithms.budget_arbitrage`."""

    def propose(
        self,
        campaigns: Sequence[CampaignStats],
        total_budget: float,
        *,
        state: Mapping[str, object] | None = None,
    ) -> BudgetProposal: ...


Eligibility = Callable[[str], bool] | AbstractSet[str]


class AliasSampler:
    """Vose's alias method over an approved allocation, with pre-drawn choices for the click path.

    Build it once per approved allocation (O(K)). Arms with weight 0 are never returned. Weights
    are normalised by their sum, so a vector that sums to 1 up to rounding is accepted as is.

    * :meth:`choose` without an ``rng`` (the click path) pops one ``(arm, probability)`` from a
      block of choices drawn in advance with numpy (:meth:`sample_indices`'s alias draw): one
      method call and one ``list.pop`` per click. Blocks start at 64 choices and double up to
      :data:`CHOICE_BLOCK`, so a rarely clicked link holds little memory.
    * :meth:`choose` with a ``random.Random`` uses one uniform from it: reproducible given a seed.
    * :meth:`sample` maps two uniforms in [0, 1) to ``(arm, probability of that arm)``.
    * :meth:`sample_eligible` renormalises over the eligible arms (e.g. offers not paused or
      capped right now) and returns ``None`` when no eligible arm has positive weight.
    * :meth:`sample_indices` is a vectorised numpy draw for simulations.

    The pre-drawn choices are i.i.d. from the allocation and each is handed out at most once:
    ``list.pop`` is atomic, and a thread that finds the block empty draws a new one, takes its
    own choice from it and only then publishes it. Two threads may both refill: what is left of
    the block replaced is dropped, for a reason that does not depend on its values, so the
    choices handed out stay i.i.d. Threads therefore never share a choice.
    Processes never share a stream: blocks are drawn from a generator seeded from the OS per
    process (a forked child creates its own), and a fork empties every block the child inherits.
    """

    __slots__ = (
        "_arm_ids",
        "_probs",
        "_items",
        "_table",
        "_n",
        "_thresholds",
        "_alias_idx",
        "_pos_idx",
        "_alias_col",
        "_item_array",
        "_buffer",
        "_block",
        "_max_block",
        "__weakref__",
    )

    def __init__(self, weights: Mapping[str, float], *, max_block: int = CHOICE_BLOCK) -> None:
        if not weights:
            raise ValueError("weights must not be empty")
        if isinstance(max_block, bool) or not isinstance(max_block, int) or max_block < 1:
            raise ValueError(f"max_block must be a positive integer, got {max_block!r}")
        arm_ids: list[str] = []
        raw: list[float] = []
        for arm, w in weights.items():
            wf = float(w)
            if not math.isfinite(wf) or wf < 0.0:
                raise ValueError(f"weight of {arm!r} must be finite and >= 0, got {w!r}")
            arm_ids.append(arm)
            raw.append(wf)
        total = math.fsum(raw)
        if total <= 0.0:
            raise ValueError("at least one weight must be positive")
        probs = [w / total for w in raw]
        self._arm_ids: tuple[str, ...] = tuple(arm_ids)
        self._probs: dict[str, float] = dict(zip(arm_ids, probs, strict=True))
        positive = [i for i, p in enumerate(probs) if p > 0.0]
        self._pos_idx = positive
        self._items: tuple[tuple[str, float], ...] = tuple((arm_ids[i], probs[i]) for i in positive)
        n = len(positive)
        self._n = n
        scaled = [probs[i] * n for i in positive]
        threshold = [1.0] * n
        alias = list(range(n))
        small = [j for j in range(n) if scaled[j] < 1.0]
        large = [j for j in range(n) if scaled[j] >= 1.0]
        while small and large:
            s = small.pop()
            g = large.pop()
            threshold[s] = scaled[s]
            alias[s] = g
            scaled[g] = (scaled[g] + scaled[s]) - 1.0
            if scaled[g] < 1.0:
                small.append(g)
            else:
                large.append(g)
        # Whatever is left (numerically ~1) keeps itself with certainty.
        for j in large + small:
            threshold[j] = 1.0
            alias[j] = j
        items = self._items
        self._table: list[tuple[float, str, float, str, float]] = [
            (threshold[j], items[j][0], items[j][1], items[alias[j]][0], items[alias[j]][1]) for j in range(n)
        ]
        self._thresholds = np.asarray(threshold, dtype=np.float64)
        self._alias_idx = np.asarray([positive[a] for a in alias], dtype=np.int64)
        self._alias_col = np.asarray(alias, dtype=np.int64)
        # The (arm, probability) tuples as an object array: indexing it with a block of columns
        # and calling tolist() builds the block of choices in C, sharing the tuples.
        self._item_array: npt.NDArray[np.object_] = np.empty(n, dtype=object)
        for j, item in enumerate(items):
            self._item_array[j] = item
        self._buffer: list[tuple[str, float]] = []
        self._block = min(_FIRST_BLOCK, max_block)
        self._max_block = max_block

    @property
    def arm_ids(self) -> tuple[str, ...]:
        """All arms, in the order of the weights given (including zero-weight arms)."""
        return self._arm_ids

    @property
    def weights(self) -> dict[str, float]:
        """The normalised allocation this sampler draws from."""
        return dict(self._probs)

    def probability(self, arm: str) -> float:
        """Probability of ``arm`` under the allocation (0.0 for unknown arms)."""
        return self._probs.get(arm, 0.0)

    def sample(self, u1: float, u2: float) -> tuple[str, float]:
        """Map two independent uniforms in [0, 1) to ``(arm, probability of arm)``."""
        n = self._n
        i = int(u1 * n)
        if i >= n:  # u1 == 1.0 (not produced by random.random, but be safe)
            i = n - 1
        thr, arm, p, alias_arm, alias_p = self._table[i]
        if u2 < thr:
            return arm, p
        return alias_arm, alias_p

    def choose(self, rng: random.Random | None = None) -> tuple[str, float]:
        """Draw one arm with its probability.

        Without ``rng`` (the click path): the next pre-drawn choice of this process. With a
        ``random.Random``: one uniform from it, so a seeded generator gives a reproducible sequence.
        """
        if rng is None:
            try:
                return self._buffer.pop()
            except IndexError:
                return self._refill()
        x = rng.random() * self._n
        i = int(x)
        thr, arm, p, alias_arm, alias_p = self._table[i]
        if x - i < thr:
            return arm, p
        return alias_arm, alias_p

    def _refill(self) -> tuple[str, float]:
        """Draw a new block of choices, keep all but one for the next clicks, return that one."""
        size = self._block
        if size < self._max_block:
            self._block = min(2 * size, self._max_block)
        gen = _PROCESS_STREAM.generator_for(self)
        cols = gen.integers(0, self._n, size=size)
        keep = gen.random(size) < self._thresholds[cols]
        block: list[tuple[str, float]] = self._item_array[np.where(keep, cols, self._alias_col[cols])].tolist()
        mine = block.pop()
        # Published after the pop: no other thread can take the choice returned here.
        self._buffer = block
        return mine

    def sample_eligible(self, eligible: Eligibility, rng: random.Random | None = None) -> tuple[str, float] | None:
        """Draw among eligible arms only, renormalising the allocation over them.

        ``eligible`` is a set of arm ids or a predicate. Returns ``(arm, conditional probability)``
        or ``None`` when no eligible arm has positive weight. Exact: rejection sampling from the
        allocation (a few tries; without ``rng`` the tries are pre-drawn choices, as in
        :meth:`choose`), then an inverse-CDF draw over the eligible arms.
        """
        test: Callable[[str], bool]
        if isinstance(eligible, AbstractSet):
            test = eligible.__contains__
        else:
            test = eligible
        mass = 0.0
        all_ok = True
        for arm, p in self._items:
            if test(arm):
                mass += p
            else:
                all_ok = False
        if all_ok:
            return self.choose(rng)
        if mass <= 0.0:
            return None
        if rng is None:
            choose = self.choose
            for _ in range(16):
                arm, p = choose()
                if test(arm):
                    return arm, p / mass
            draw = _random_module_random  # reseeded in a forked child by the random module
        else:
            draw = rng.random
            table = self._table
            n = self._n
            for _ in range(16):
                x = draw() * n
                i = int(x)
                thr, arm, p, alias_arm, alias_p = table[i]
                if x - i >= thr:
                    arm, p = alias_arm, alias_p
                if test(arm):
                    return arm, p / mass
        target = draw() * mass
        last: tuple[str, float] | None = None
        acc = 0.0
        for arm, p in self._items:
            if test(arm):
                last = (arm, p / mass)
                acc += p
                if target < acc:
                    return last
        return last

    def sample_indices(self, size: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Vectorised draw of ``size`` arm indices (positions in :attr:`arm_ids`)."""
        cols = rng.integers(0, self._n, size=size)
        u = rng.random(size)
        own = np.asarray(self._pos_idx, dtype=np.int64)[cols]
        out: npt.NDArray[np.int64] = np.where(u < self._thresholds[cols], own, self._alias_idx[cols])
        return out


class _ProcessStream:
    """This process's numpy generator for pre-drawn choices, and the samplers holding choices.

    The generator is seeded from the OS and tied to the process id, so a forked child draws from
    a generator of its own whatever forked it. ``os.fork`` also runs :meth:`after_fork_in_child`,
    which empties every block the child inherited (the parent hands out the same choices). Nothing
    is drawn or registered until the first block is needed.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.generator: np.random.Generator | None = None
        self.holders: weakref.WeakSet[AliasSampler] = weakref.WeakSet()
        self.hooked = False

    def generator_for(self, sampler: AliasSampler) -> np.random.Generator:
        """The generator of this process; ``sampler`` is emptied if the process forks."""
        generator = self.generator
        if generator is None or self.pid != os.getpid():
            with self.lock:
                if not self.hooked:
                    os.register_at_fork(after_in_child=self.after_fork_in_child)
                    self.hooked = True
                if self.generator is None or self.pid != os.getpid():
                    self.generator = np.random.default_rng()
                    self.pid = os.getpid()
                generator = self.generator
        self.holders.add(sampler)
        return generator

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()  # another thread of the parent may have held it
        self.generator = None
        for sampler in list(self.holders):
            sampler._buffer = []


_PROCESS_STREAM = _ProcessStream()


def choose_arm(sampler: AliasSampler, rng: random.Random | None = None) -> tuple[str, float]:
    """Click-path helper: one arm from an approved allocation's sampler, with its probability."""
    return sampler.choose(rng)
