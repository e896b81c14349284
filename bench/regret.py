"""Regret benchmark: per-click vs governed batched Thompson sampling, UCB1, KL-UCB and MABWiser.

Reproduces the Bernoulli setting of Chapelle & Li (2011), "An Empirical Evaluation of Thompson
Sampling": K arms, the best with conversion rate 0.5 and the others 0.5 - eps, Beta(1, 1) priors.
The reported regret is the *expected* cumulative regret at the horizon, ``sum_t (p* - p_{a_t})``,
computed from the true rates. The best arm's position is drawn at random per replication so that
argmax tie-breaking favours no policy.

Policies:

* ``ts``: per-click Thompson sampling (numpy, vectorised over replications; ``--ts-engine python``
  runs :class:`algorithms.thompson.ThompsonPolicy` with ``random.betavariate`` instead).
* ``batched_governed``: the loop the product runs, judged by the real policies. The link starts on
  an equal split (approved, as ``create_link`` does); before every later batch of ``--batch``
  clicks, :class:`algorithms.thompson.ThompsonSampling` with its registry defaults (n_samples 10000,
  gamma 1, floor 0) proposes P(best) from the cumulative evidence, the ``allocation.update`` input
  the product builds (``server.links.allocations.allocation_state``: arms, current_weights,
  evidence {clicks, conversions, revenue}) is judged by a real OPA serving the bundle built from
  ``rego/`` (``smartlinks/decision``), and a clamp obligation is applied with
  ``server.governance.clamp.apply_clamp`` and judged again: :meth:`Gateway.resolve`, the procedure
  ``Gateway.decide`` runs. A denied cycle keeps the allocation in force. The approved allocation
  routes the batch's clicks through :class:`algorithms.base.AliasSampler`. The limits are therefore
  the shipped ``data.config.thompson_sampling`` (``rego/config/data.json``). OPA is started for the
  run (``--opa-bin``) unless ``--opa-url`` names one.
* ``batched_rcp_approx``: cross-check without OPA, clearly not the product: the same loop with the
  bounds of ``rego/smartlinks/lib/bandit.rego`` recomputed in Python from the shipped data (or
  ``--floor`` / ``--max-change`` overrides) and projected with ``apply_clamp``. It shares the random
  streams of ``batched_governed``, so with the shipped limits the two give the same regrets.
* ``batched_free``: the same loop without any limits (the proposal is routed as is).
* ``ucb1``: per-click UCB1, ``mean + sqrt(2 ln t / n)``.
* ``kl_ucb``: per-click KL-UCB, ``ln t`` exploration (c = 0).
* ``mab_ts``, ``mab_ucb1``: MABWiser's ``ThompsonSampling`` and ``UCB1(alpha=1)``: one
  ``predict()`` per click, ``partial_fit`` every ``--mab-fit-every`` clicks (MABWiser is too slow
  to refit per click), after an initial ``fit`` on one click of every arm.

The Lai-Robbins lower bound is ``C ln T`` with ``C = sum_{i suboptimal} (p* - p_i) / kl(p_i, p*)``.

Run ``python -m bench.regret`` (defaults: T = 100000, 20 replications, K = 10, eps 0.1 and 0.02)
or ``python -m bench.regret --quick`` for a CI smoke run (``make bench-regret``).
``--speed-only`` runs only the arm-choice speed measurement (:func:`measure_speed`): the click
path's ``AliasSampler.choose()`` and ``LinkRoute.choose`` against MABWiser's ``predict()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from algorithms.base import AliasSampler, ArmStats  # noqa: E402
from algorithms.thompson import ThompsonPolicy, ThompsonSampling, thompson_choices  # noqa: E402
from algorithms.ucb import kl_bernoulli, kl_ucb_indices, ucb1_indices  # noqa: E402

FloatArray = npt.NDArray[np.float64]

POLICIES: dict[str, str] = {
    "ts": "TS per-click",
    "batched_governed": "TS batched, governed by OPA (product)",
    "batched_rcp_approx": "  cross-check: limits in Python, no OPA",
    "batched_free": "TS batched, no limits",
    "ucb1": "UCB1 per-click",
    "kl_ucb": "KL-UCB per-click",
    "mab_ts": "MABWiser ThompsonSampling",
    "mab_ucb1": "MABWiser UCB1",
}

# Random stream of each policy (SeedSequence key). The cross-check shares the governed policy's
# stream so that the two can be compared replication by replication.
_STREAM: dict[str, int] = {
    "ts": 0,
    "batched_governed": 1,
    "batched_rcp_approx": 1,
    "batched_free": 2,
    "ucb1": 3,
    "kl_ucb": 4,
    "mab_ts": 5,
    "mab_ucb1": 6,
}

REGO_DIR = ROOT / "rego"
SHIPPED_DATA = REGO_DIR / "config" / "data.json"
DEFAULT_OPA_BIN = Path(os.environ.get("OPA_BIN") or ROOT / ".tools" / "bin" / "opa")
POLICY_SECTION = "thompson_sampling"  # the Rego policy that judges thompson_sampling allocations


def shipped_limits(section: str = POLICY_SECTION) -> dict[str, float]:
    """The bandit limits shipped in the bundle data (``rego/config/data.json``)."""
    data = json.loads(SHIPPED_DATA.read_text())
    return {k: float(v) for k, v in data[section].items()}


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run depends on (with the seed, the results are deterministic)."""

    k: int = 10
    eps: tuple[float, ...] = (0.1, 0.02)
    horizon: int = 100_000
    reps: int = 20
    batch: int = 1000
    batch_growth: float = 1.0
    batch_max: int = 1_000_000
    mc_samples: int = 10_000
    mab_reps: int | None = None
    mab_horizon: int | None = None
    mab_fit_every: int = 100
    ts_engine: str = "numpy"
    policies: tuple[str, ...] = tuple(POLICIES)
    seed: int = 2011
    jobs: int = 1
    rcp_floor: float | None = None
    rcp_max_change: float | None = None
    opa_url: str | None = None
    opa_bin: str = str(DEFAULT_OPA_BIN)

    def approx_limits(self) -> dict[str, float]:
        """Limits of the Python cross-check: the shipped ones, with the ``--floor`` / ``--max-change``
        overrides (which do not reach OPA: ``batched_governed`` always runs the shipped bundle)."""
        limits = shipped_limits()
        if self.rcp_floor is not None:
            limits["exploration_floor"] = self.rcp_floor
        if self.rcp_max_change is not None:
            limits["max_change_per_cycle"] = self.rcp_max_change
        return limits


@dataclass
class PolicyResult:
    """Regret of one policy at one eps over its replications."""

    policy: str
    label: str
    eps: float
    horizon: int
    reps: int
    regrets: list[float]
    seconds: float
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean regret at the horizon."""
        return float(np.mean(self.regrets))

    @property
    def stderr(self) -> float:
        """Standard error of the mean regret."""
        if len(self.regrets) < 2:
            return float("nan")
        return float(np.std(self.regrets, ddof=1) / math.sqrt(len(self.regrets)))


def arm_means(k: int, eps: float, best: float = 0.5) -> FloatArray:
    """Chapelle & Li arms: one at ``best``, ``k - 1`` at ``best - eps``."""
    p = np.full(k, best - eps)
    p[0] = best
    return p


def lai_robbins_constant(p: Sequence[float] | FloatArray) -> float:
    """``sum_{i: p_i < p*} (p* - p_i) / kl(p_i, p*)``: regret >= (this + o(1)) ln T."""
    arr = np.asarray(p, dtype=np.float64)
    best = float(arr.max())
    sub = arr[arr < best]
    return float(np.sum((best - sub) / kl_bernoulli(sub, best)))


def batch_schedule(horizon: int, batch: int, growth: float = 1.0, batch_max: int | None = None) -> list[int]:
    """Batch sizes summing to ``horizon``: ``batch``, then times ``growth`` per cycle, up to ``batch_max``."""
    if batch < 1 or growth < 1.0:
        raise ValueError("batch must be >= 1 and growth >= 1")
    cap = batch_max if batch_max is not None else horizon
    out: list[int] = []
    size = float(batch)
    done = 0
    while done < horizon:
        b = min(int(size), cap, horizon - done)
        out.append(b)
        done += b
        size = min(size * growth, float(cap))
    return out


def _problem(cfg: BenchConfig, eps: float, reps: int, rng: np.random.Generator) -> FloatArray:
    """Per-replication arm means (reps, K), the best arm at a random position in each row."""
    base = arm_means(cfg.k, eps)
    rows = np.empty((reps, cfg.k))
    for r in range(reps):
        rows[r] = rng.permutation(base)
    return rows


def _regret(pulls: FloatArray, p: FloatArray) -> FloatArray:
    gap = p.max(axis=1, keepdims=True) - p
    out: FloatArray = (pulls * gap).sum(axis=1)
    return out


def sim_ts(p: FloatArray, horizon: int, rng: np.random.Generator, block: int = 4096) -> FloatArray:
    """Per-click Thompson sampling, vectorised over replications (rows of ``p``)."""
    reps, k = p.shape
    s = np.zeros((reps, k))
    n = np.zeros((reps, k))
    rows = np.arange(reps)
    u = rng.random((0, reps))
    for t in range(horizon):
        if t % block == 0:
            u = rng.random((min(block, horizon - t), reps))
        arms = thompson_choices(s, n - s, rng)
        n[rows, arms] += 1.0
        s[rows, arms] += u[t % block] < p[rows, arms]
    return _regret(n, p)


def sim_ts_python(p: FloatArray, horizon: int, rng: np.random.Generator) -> FloatArray:
    """Per-click Thompson sampling with :class:`ThompsonPolicy` (pure Python, one replication at a time)."""
    reps, k = p.shape
    pulls = np.zeros((reps, k))
    for r in range(reps):
        rnd = random.Random(int(rng.integers(2**63)))  # noqa: S311
        policy = ThompsonPolicy([str(i) for i in range(k)], rng=rnd)
        probs = p[r].tolist()
        counts = [0] * k
        draw = rnd.random
        for _ in range(horizon):
            i = policy.select_index()
            counts[i] += 1
            policy.update(i, draw() < probs[i])
        pulls[r] = counts
    return _regret(pulls, p)


def _sim_index(
    p: FloatArray,
    horizon: int,
    rng: np.random.Generator,
    index: Callable[[FloatArray, FloatArray, float], FloatArray],
) -> FloatArray:
    reps, k = p.shape
    s = np.zeros((reps, k))
    n = np.zeros((reps, k))
    rows = np.arange(reps)
    block = 4096
    u = rng.random((0, reps))
    for t in range(horizon):
        if t % block == 0:
            u = rng.random((min(block, horizon - t), reps))
        if t < k:
            arms = np.full(reps, t)
        else:
            arms = np.argmax(index(s, n, float(t)), axis=1)
        n[rows, arms] += 1.0
        s[rows, arms] += u[t % block] < p[rows, arms]
    return _regret(n, p)


def sim_ucb1(p: FloatArray, horizon: int, rng: np.random.Generator) -> FloatArray:
    """Per-click UCB1 (c = 2), vectorised over replications."""
    return _sim_index(p, horizon, rng, lambda s, n, t: ucb1_indices(s, n, t, 2.0))


def sim_kl_ucb(p: FloatArray, horizon: int, rng: np.random.Generator) -> FloatArray:
    """Per-click KL-UCB (c = 0), vectorised over replications."""
    return _sim_index(p, horizon, rng, lambda s, n, t: kl_ucb_indices(s, n, t, 0.0))


@dataclass(frozen=True)
class Verdict:
    """What governance made of one proposed allocation."""

    allow: bool
    weights: dict[str, float]  # the approved (possibly clamped) allocation; the proposal when denied
    clamped: bool = False
    error: str | None = None  # an OPA failure code (a deny, failing closed)
    notes: tuple[str, ...] = ()  # codes of the clamp notes (below_exploration_floor, arm_starved, ...)
    revision: str | None = None


class Governor(Protocol):
    """Judges one ``allocation.update`` of the benchmark link."""

    def judge(
        self,
        weights: Mapping[str, float],
        current: Mapping[str, float] | None,
        evidence: Mapping[str, Mapping[str, float]],
        cycle: int,
    ) -> Verdict: ...


_LINK_ID = "lnk_bench"
_CLOCK0 = datetime(2025, 1, 6, tzinfo=UTC)


class OpaGovernor:
    """The product's decision procedure: the ``allocation.update`` input document built like
    ``approve_allocation`` builds it, judged by OPA at ``smartlinks/decision`` through
    :meth:`server.governance.gateway.Gateway.resolve` (clamp, then ask again), without a database."""

    def __init__(self, opa_url: str, *, timeout: float = 10.0) -> None:
        from server.governance.gateway import Actor, Gateway, Target
        from server.policy.opa_client import OpaClient

        # Generous timeouts: the machine is shared and a timeout would count as a (fail-closed) deny.
        self.client = OpaClient(opa_url, connect_timeout=timeout, timeout=timeout)
        self.gateway = Gateway(self.client, mode="test")
        # The autopilot's actor for this link (server.autopilot.services), also the caller.
        self.actor = Actor(id=f"algo:{POLICY_SECTION}:{_LINK_ID}", kind="algorithm")
        self.target = Target(kind="link", id=_LINK_ID)

    def judge(
        self,
        weights: Mapping[str, float],
        current: Mapping[str, float] | None,
        evidence: Mapping[str, Mapping[str, float]],
        cycle: int,
    ) -> Verdict:
        from server.governance.gateway import Action, build_input

        action = Action(
            type="allocation.update",
            actor=self.actor,
            target=self.target,
            params={"algorithm": POLICY_SECTION, "weights": {str(a): float(w) for a, w in weights.items()}},
        )
        state = {  # server.links.allocations.allocation_state
            "arms": list(weights),
            "current_weights": dict(current or {}),
            "evidence": {arm: dict(ev) for arm, ev in evidence.items()},
            "link": {"id": _LINK_ID, "status": "active", "algorithm": POLICY_SECTION},
        }
        doc = build_input(
            action,
            state=state,
            caller=self.actor,
            controls={"kill_switch": False, "target_kill_switch": False},
            # One cycle per simulated hour and nothing else done by this actor: no rate limit is near.
            counts={"60": 0, "3600": 0, "86400": min(cycle, 23)},
            mode="test",
            now=_CLOCK0 + timedelta(hours=cycle),
        )
        res = self.gateway.resolve(doc)
        clamp = res.obligations.get("clamp") if res.clamped else None
        notes = tuple(str(n.get("code")) for n in clamp.get("notes", [])) if isinstance(clamp, dict) else ()
        approved = {str(a): float(w) for a, w in res.params["weights"].items()}
        return Verdict(res.allow, approved, res.clamped, res.error_code, notes, res.revision)

    def close(self) -> None:
        self.client.close()


def rcp_bounds(
    weights: Mapping[str, float],
    current: Mapping[str, float] | None,
    clicks: Mapping[str, float],
    limits: Mapping[str, float],
) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Python mirror of ``lib/bandit.rego`` for a well-formed vector: per-arm bounds and the note
    codes of the arms outside them (no notes: no clamp)."""
    floor = limits["exploration_floor"]
    unsampled = max(floor, min(limits["unsampled_min_share"], 1.0 / max(len(weights), 1)))
    change = limits["max_change_per_cycle"]
    tol = limits["bound_tolerance"]
    bounds: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    for arm, w in weights.items():
        starved = clicks.get(arm, 0) < limits["min_samples_before_starve"]
        low = unsampled if starved else floor
        hard = (max(0.0, low), 1.0)
        interval = hard
        cur = current.get(arm) if current else None
        if hard[0] <= hard[1] and change < 1 and cur is not None:  # lib.bounds.narrow
            c_lo, c_hi = cur - change, cur + change
            lo, hi = max(hard[0], c_lo), min(hard[1], c_hi)
            interval = (lo, hi) if lo <= hi else ((hard[1], hard[1]) if c_lo > hard[1] else (hard[0], hard[0]))
        bounds[arm] = interval
        if interval[0] - tol <= w <= interval[1] + tol:
            continue
        arm_notes = []
        if w < low - tol:
            arm_notes.append("arm_starved" if starved else "below_exploration_floor")
        if cur is not None and abs(w - cur) > change + tol:
            arm_notes.append("weight_change_too_large")
        notes.extend(arm_notes or ["out_of_bounds"])
    return bounds, notes


class PythonGovernor:
    """Cross-check without OPA: :func:`rcp_bounds`, then the projection the server applies."""

    def __init__(self, limits: Mapping[str, float]) -> None:
        self.limits = dict(limits)

    def judge(
        self,
        weights: Mapping[str, float],
        current: Mapping[str, float] | None,
        evidence: Mapping[str, Mapping[str, float]],
        cycle: int,
    ) -> Verdict:
        from server.governance.clamp import ClampError, apply_clamp

        clicks = {arm: ev["clicks"] for arm, ev in evidence.items()}
        bounds, notes = rcp_bounds(weights, current, clicks, self.limits)
        if not notes:
            return Verdict(True, dict(weights))
        obligation = {"param": "weights", "bounds": {a: list(b) for a, b in bounds.items()}, "total": 1.0}
        try:
            params = apply_clamp({"weights": dict(weights)}, obligation)
        except ClampError:
            return Verdict(False, dict(weights), notes=tuple(notes))
        return Verdict(True, params["weights"], True, notes=tuple(notes))


def sim_batched(
    p: FloatArray,
    schedule: Sequence[int],
    rng: np.random.Generator,
    *,
    mc_samples: int,
    governor: Governor | None,
) -> tuple[FloatArray, dict[str, float]]:
    """Batched Thompson allocation routed by :class:`AliasSampler`, each allocation judged by
    ``governor`` (none: routed as proposed). Returns regrets and counters: decisions, clamped,
    denied, errors, clamp notes by code, and ``mean_min_weight`` (the average over replications and
    batches of the smallest share in force: what the floors leave the worst arm)."""
    reps, k = p.shape
    algo = ThompsonSampling.from_params({"n_samples": mc_samples})
    ids = [f"offer_{i:02d}" for i in range(k)]
    pos = {a: i for i, a in enumerate(ids)}
    pulls = np.zeros((reps, k))
    min_weights: list[float] = []
    tally: Counter[str] = Counter()

    def evidence(clicks: npt.NDArray[np.int64], conv: npt.NDArray[np.int64]) -> dict[str, dict[str, float]]:
        # Payout 1 per conversion: revenue is not what the bandit policies judge.
        return {
            ids[i]: {"clicks": int(clicks[i]), "conversions": int(conv[i]), "revenue": float(conv[i])} for i in range(k)
        }

    def judged(weights: Mapping[str, float], current: Mapping[str, float] | None, ev: Any, cycle: int) -> Verdict:
        assert governor is not None
        verdict = governor.judge(weights, current, ev, cycle)
        tally["decisions"] += 1
        tally["clamped"] += verdict.clamped
        tally["denied"] += not verdict.allow
        tally["errors"] += verdict.error is not None
        for code in verdict.notes:
            tally[f"note:{code}"] += 1
        return verdict

    for r in range(reps):
        rnd = random.Random(int(rng.integers(2**63)))  # noqa: S311
        conv = np.zeros(k, dtype=np.int64)
        clicks = np.zeros(k, dtype=np.int64)
        # The link's first allocation: an equal split, approved like create_link does.
        current: dict[str, float] = {a: 1.0 / k for a in ids}
        if governor is not None:
            first = judged(current, None, evidence(clicks, conv), 0)
            if not first.allow:
                raise RuntimeError(f"the policies denied the equal split of a new link: {first}")
            current = first.weights
        state: Mapping[str, object] | None = None
        for cycle, size in enumerate(schedule):
            if cycle > 0:  # an autopilot cycle on the evidence so far
                stats = [ArmStats(ids[i], int(clicks[i]), int(conv[i]), float(conv[i])) for i in range(k)]
                proposal = algo.propose(stats, current, rng, state=state)
                state = proposal.state
                if governor is None:
                    current = proposal.weights
                else:
                    verdict = judged(proposal.weights, current, evidence(clicks, conv), cycle)
                    if verdict.allow:  # a denied cycle keeps the allocation in force
                        current = verdict.weights
            sampler = AliasSampler(current)
            choose = sampler.choose
            counts = [0] * k
            for _ in range(size):
                counts[pos[choose(rnd)[0]]] += 1
            c = np.asarray(counts, dtype=np.int64)
            conv += rng.binomial(c, p[r])
            clicks += c
            min_weights.append(min(current.values()))
        pulls[r] = clicks
    info = {key: float(v) for key, v in sorted(tally.items())}
    info["mean_min_weight"] = float(np.mean(min_weights))
    return _regret(pulls, p), info


def sim_mabwiser(p: FloatArray, horizon: int, rng: np.random.Generator, *, policy: str, fit_every: int) -> FloatArray:
    """MABWiser policy: ``predict()`` per click, ``partial_fit`` every ``fit_every`` clicks."""
    from mabwiser.mab import MAB, LearningPolicy

    reps, k = p.shape
    pulls = np.zeros((reps, k))
    arms = list(range(k))
    for r in range(reps):
        lp = LearningPolicy.ThompsonSampling() if policy == "ts" else LearningPolicy.UCB1(alpha=1.0)
        mab = MAB(arms, lp, seed=int(rng.integers(2**31)))
        first = np.asarray(arms)
        mab.fit(first, (rng.random(k) < p[r]).astype(np.int64))
        counts = np.ones(k)
        t = k
        while t < horizon:
            b = min(fit_every, horizon - t)
            decisions = np.fromiter((mab.predict() for _ in range(b)), dtype=np.int64, count=b)
            rewards = (rng.random(b) < p[r, decisions]).astype(np.int64)
            mab.partial_fit(decisions, rewards)
            counts += np.bincount(decisions, minlength=k)
            t += b
        pulls[r] = counts
    return _regret(pulls, p)


def run_policy(cfg: BenchConfig, eps: float, policy: str) -> PolicyResult:
    """Simulate one policy at one eps (deterministic given ``cfg.seed``)."""
    eps_i = cfg.eps.index(eps) if eps in cfg.eps else 0
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    seq = np.random.SeedSequence([cfg.seed, eps_i, _STREAM[policy]])
    rng = np.random.default_rng(seq)
    is_mab = policy.startswith("mab_")
    reps = (cfg.mab_reps or cfg.reps) if is_mab else cfg.reps
    horizon = (cfg.mab_horizon or cfg.horizon) if is_mab else cfg.horizon
    p = _problem(cfg, eps, reps, rng)
    note = ""
    extra: dict[str, float] = {}
    if is_mab:
        import mabwiser.mab  # noqa: F401 - import (about 2 s, scikit-learn) outside the timing

    start = time.perf_counter()
    if policy == "ts":
        regrets = sim_ts(p, horizon, rng) if cfg.ts_engine == "numpy" else sim_ts_python(p, horizon, rng)
        note = f"engine={cfg.ts_engine}"
    elif policy in ("batched_governed", "batched_rcp_approx", "batched_free"):
        schedule = batch_schedule(horizon, cfg.batch, cfg.batch_growth, cfg.batch_max)
        governor: OpaGovernor | PythonGovernor | None = None
        limits: dict[str, float] | None = None
        if policy == "batched_governed":
            if not cfg.opa_url:
                raise ValueError("batched_governed needs an OPA: set opa_url (run_benchmark starts one)")
            governor, limits = OpaGovernor(cfg.opa_url), shipped_limits()
        elif policy == "batched_rcp_approx":
            limits = cfg.approx_limits()
            governor = PythonGovernor(limits)
        try:
            regrets, extra = sim_batched(p, schedule, rng, mc_samples=cfg.mc_samples, governor=governor)
        finally:
            if isinstance(governor, OpaGovernor):
                governor.close()
        extra["batches"] = float(len(schedule))
        note = f"{len(schedule)} batches"
        if limits is not None:
            floor = limits["exploration_floor"]
            forced = (cfg.k - 1) * floor * eps * (horizon - schedule[0])
            extra["floor_forced_regret"] = forced
            extra.update({f"limit:{key}": value for key, value in limits.items()})
            notes = ", ".join(f"{key[5:]} {int(v)}" for key, v in extra.items() if key.startswith("note:"))
            note += (
                f"; {int(extra.get('decisions', 0))} decisions, {int(extra.get('clamped', 0))} clamped"
                f"{f' (notes: {notes})' if notes else ''}, {int(extra.get('denied', 0))} denied"
                f" ({int(extra.get('errors', 0))} OPA errors)"
                f"; floor {floor:g} (>= {forced:.0f} regret), starve < {limits['min_samples_before_starve']:g}"
                f" clicks -> {limits['unsampled_min_share']:g}, max change {limits['max_change_per_cycle']:g}"
            )
    elif policy == "ucb1":
        regrets = sim_ucb1(p, horizon, rng)
    elif policy == "kl_ucb":
        regrets = sim_kl_ucb(p, horizon, rng)
    elif is_mab:
        regrets = sim_mabwiser(p, horizon, rng, policy=policy[4:], fit_every=cfg.mab_fit_every)
        note = f"partial_fit every {cfg.mab_fit_every}"
    else:
        raise ValueError(f"unknown policy {policy!r}")
    seconds = time.perf_counter() - start
    return PolicyResult(policy, POLICIES[policy], eps, horizon, reps, [float(x) for x in regrets], seconds, note, extra)


def _run_task(args: tuple[BenchConfig, float, str]) -> PolicyResult:
    return run_policy(*args)


_COST = {
    "mab_ts": 6,
    "kl_ucb": 5,
    "batched_governed": 4,
    "batched_rcp_approx": 4,
    "batched_free": 4,
    "mab_ucb1": 3,
    "ts": 2,
    "ucb1": 1,
}


def run_benchmark(cfg: BenchConfig) -> list[PolicyResult]:
    """Run every (eps, policy) pair of ``cfg``, in ``cfg.jobs`` processes; results in input order."""
    for name in cfg.policies:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; choose from {list(POLICIES)}")
    with policy_server(cfg) as cfg:
        tasks = [(cfg, eps, pol) for eps in cfg.eps for pol in cfg.policies]
        if cfg.jobs <= 1 or len(tasks) == 1:
            return [run_policy(*t) for t in tasks]
        order = sorted(range(len(tasks)), key=lambda i: -_COST.get(tasks[i][2], 0))
        results: dict[int, PolicyResult] = {}
        with ProcessPoolExecutor(max_workers=cfg.jobs) as pool:
            futures = {i: pool.submit(_run_task, tasks[i]) for i in order}
            for i, fut in futures.items():
                results[i] = fut.result()
        return [results[i] for i in range(len(tasks))]


@contextlib.contextmanager
def policy_server(cfg: BenchConfig) -> Iterator[BenchConfig]:
    """``cfg`` with an ``opa_url`` when ``batched_governed`` needs one: unless given, a real OPA
    sidecar (``server.policy.sidecar.OpaSidecar``) serving the bundle built from ``rego/``
    (``server.policy.bundle.build_bundle``, tests left out), stopped on exit."""
    if "batched_governed" not in cfg.policies or cfg.opa_url:
        yield cfg
        return
    from server.policy.bundle import build_bundle
    from server.policy.sidecar import OpaSidecar

    opa_bin = Path(cfg.opa_bin)
    with tempfile.TemporaryDirectory(prefix="bench-regret-opa-") as tmp:
        bundle = build_bundle(opa_bin, REGO_DIR, Path(tmp) / "bundle.tar.gz")
        with OpaSidecar(opa_bin, bundle.path, Path(tmp) / "opa.log") as sidecar:
            yield replace(cfg, opa_url=sidecar.url)


#: The issue's speed target: arm choices per click at least this many times MABWiser's rate.
SPEED_TARGET = 100.0


@dataclass
class SpeedResult:
    """Arm choices per second, one call per click (best of ``rounds`` rounds, one thread).

    ``alias_buffered_choose`` is the product's click path: ``AliasSampler.choose()`` with no rng
    pops a choice pre-drawn in blocks with numpy (refills included). ``alias_choose`` is the
    one-uniform path (``choose(random.Random)``), the figure reported before the blocks existed.
    ``link_route_choose`` is ``LinkRoute.choose`` as ``ClickHandler`` calls it (pre-drawn choice
    plus the ``Choice`` it returns). ``alias_sample_eligible`` draws among half the arms.
    """

    alias_buffered_choose: float
    alias_choose: float
    alias_sample_eligible: float
    link_route_choose: float
    thompson_policy_select: float
    mab_ts_predict: float
    mab_ucb1_predict: float
    rounds: int = 1

    @property
    def ratio_ts(self) -> float:
        """Product arm choice / MABWiser Thompson sampling predict()."""
        return self.alias_buffered_choose / self.mab_ts_predict

    @property
    def ratio_ucb1(self) -> float:
        """Product arm choice / MABWiser UCB1 predict()."""
        return self.alias_buffered_choose / self.mab_ucb1_predict


def _rate(call: Callable[[], object], n: int) -> float:
    """Calls per second of ``call()``, one call per iteration (as one click makes one call)."""
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - t0)


def measure_speed(
    k: int = 10, n_alias: int = 1_000_000, n_mab: int = 20_000, seed: int = 7, rounds: int = 3
) -> SpeedResult:
    """Time the click path's arm choice against ThompsonPolicy.select and MABWiser predict().

    Every figure is single calls in a loop. The rounds alternate between the contenders, so that
    a burst of load on a shared machine hits them alike; each keeps its best round.
    """
    from mabwiser.mab import MAB, LearningPolicy

    from server.clicks.routing import LinkRoute, Target

    gen = np.random.default_rng(seed)
    weights = {f"offer_{i}": float(w) for i, w in enumerate(gen.dirichlet(np.ones(k)))}
    sampler = AliasSampler(weights)
    rnd = random.Random(seed)  # noqa: S311
    eligible = set(list(weights)[: max(1, k // 2)])
    targets = {a: Target(a, "https://example.com/{0}", True, frozenset(), frozenset(), False) for a in weights}
    route = LinkRoute("link", "slug", True, 1, sampler, targets, None, True)
    no_caps: frozenset[str] = frozenset()
    ts = ThompsonPolicy(list(weights), rng=rnd)
    for i in range(2000):
        ts.update(i % k, rnd.random() < 0.05)
    decisions = gen.integers(0, k, 5000)
    rewards = (gen.random(5000) < 0.05).astype(np.int64)
    mabs = []
    for lp in (LearningPolicy.ThompsonSampling(), LearningPolicy.UCB1(alpha=1.0)):
        mab = MAB(list(range(k)), lp, seed=seed)
        mab.fit(decisions, rewards)
        mabs.append(mab)

    def one_uniform() -> object:
        return sampler.choose(rnd)

    def half_eligible() -> object:
        return sampler.sample_eligible(eligible)

    def route_choose() -> object:
        return route.choose("US", "desktop", no_caps)

    contenders: dict[str, tuple[Callable[[], object], int]] = {
        "alias_buffered_choose": (sampler.choose, n_alias),
        "alias_choose": (one_uniform, n_alias),
        "alias_sample_eligible": (half_eligible, n_alias // 5),
        "link_route_choose": (route_choose, n_alias // 2),
        "thompson_policy_select": (ts.select, n_mab),
        "mab_ts_predict": (mabs[0].predict, n_mab),
        "mab_ucb1_predict": (mabs[1].predict, n_mab),
    }
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, (call, n) in contenders.items():
            best[name] = max(best[name], _rate(call, n))
    return SpeedResult(**best, rounds=rounds)


def format_speed(speed: SpeedResult, k: int) -> list[str]:
    """The arm-choice speed lines of the report."""
    ratio_ts, ratio_ucb1 = speed.ratio_ts, speed.ratio_ucb1
    old_ts = speed.alias_choose / speed.mab_ts_predict
    old_ucb1 = speed.alias_choose / speed.mab_ucb1_predict
    target = SPEED_TARGET
    return [
        f"arm choice speed (K={k}, one thread, one call per click, best of {speed.rounds} rounds)",
        f"  AliasSampler.choose(), pre-drawn (click path)  {speed.alias_buffered_choose:>14,.0f} /s",
        f"  LinkRoute.choose (as ClickHandler calls it)    {speed.link_route_choose:>14,.0f} /s",
        f"  AliasSampler.sample_eligible, pre-drawn        {speed.alias_sample_eligible:>14,.0f} /s (half eligible)",
        f"  AliasSampler.choose(rng), one uniform          {speed.alias_choose:>14,.0f} /s",
        f"  ThompsonPolicy.select                          {speed.thompson_policy_select:>14,.0f} /s",
        f"  MABWiser TS predict()                          {speed.mab_ts_predict:>14,.0f} /s",
        f"  MABWiser UCB1 predict()                        {speed.mab_ucb1_predict:>14,.0f} /s",
        f"  ratio click path / MABWiser TS predict:   {ratio_ts:>7,.1f}x"
        f"  (target >= {target:g}x: {'met' if ratio_ts >= target else 'NOT MET'}; one uniform: {old_ts:,.1f}x)",
        f"  ratio click path / MABWiser UCB1 predict: {ratio_ucb1:>7,.1f}x"
        f"  (target >= {target:g}x: {'met' if ratio_ucb1 >= target else 'NOT MET'}; one uniform: {old_ucb1:,.1f}x)",
        f"  ratio LinkRoute.choose / MABWiser TS, UCB1 predict: {speed.link_route_choose / speed.mab_ts_predict:,.1f}x,"
        f" {speed.link_route_choose / speed.mab_ucb1_predict:,.1f}x (arm, probability and offer)",
    ]


# The issue's targets for the governed allocation, by reference policy.
TARGETS: dict[str, tuple[str, float]] = {"ts": ("<=", 1.25), "ucb1": ("<", 0.5)}


def in_issue_setting(cfg: BenchConfig) -> bool:
    """Whether ``cfg`` is the issue's setting, where :data:`TARGETS` apply."""
    return cfg.k == 10 and cfg.horizon >= 100_000 and cfg.reps >= 20


def ratio_with_stderr(a: PolicyResult, b: PolicyResult) -> tuple[float, float]:
    """``a.mean / b.mean`` and its standard error (delta method, independent replications)."""
    ratio = a.mean / b.mean
    rel = math.hypot(a.stderr / a.mean if a.mean else 0.0, b.stderr / b.mean)
    return ratio, ratio * rel


def _find(results: Sequence[PolicyResult], eps: float, policy: str) -> PolicyResult | None:
    for r in results:
        if r.eps == eps and r.policy == policy:
            return r
    return None


def format_report(cfg: BenchConfig, results: Sequence[PolicyResult], speed: SpeedResult | None) -> str:
    """The text table printed by :func:`main`."""
    lines: list[str] = []
    for eps in cfg.eps:
        p = arm_means(cfg.k, eps)
        c = lai_robbins_constant(p)
        lb = c * math.log(cfg.horizon)
        lines.append("")
        lines.append(f"K={cfg.k}  best p=0.5  eps={eps:g}  T={cfg.horizon}  Lai-Robbins C={c:.1f}  C*ln(T)={lb:.1f}")
        head = (
            f"{'policy':<40} {'T':>7} {'reps':>4} {'mean regret':>12} {'std err':>9} {'/C lnT':>7} {'time s':>7}  note"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for r in results:
            if r.eps != eps:
                continue
            lb_r = c * math.log(r.horizon)
            lines.append(
                f"{r.label:<40} {r.horizon:>7} {r.reps:>4} {r.mean:>12.1f} {r.stderr:>9.1f} "
                f"{r.mean / lb_r:>7.2f} {r.seconds:>7.1f}  {r.note}"
            )
        gov = _find(results, eps, "batched_governed")
        for ref_name in ("ts", "ucb1", "kl_ucb", "batched_free"):
            ref = _find(results, eps, ref_name)
            if gov is not None and ref is not None and ref.horizon == gov.horizon and ref.mean > 0:
                ratio, ratio_se = ratio_with_stderr(gov, ref)
                target = TARGETS.get(ref_name)
                verdict = ""
                if target is not None and not in_issue_setting(cfg):
                    verdict = "  (targets apply at K=10, T >= 100000, >= 20 reps)"
                elif target is not None:
                    met = ratio <= target[1] if target[0] == "<=" else ratio < target[1]
                    verdict = f"  (target {target[0]} {target[1]:g}: {'met' if met else 'NOT MET'})"
                lines.append(f"ratio batched_governed / {ref_name}: {ratio:.3f} +- {ratio_se:.3f}{verdict}")
        approx = _find(results, eps, "batched_rcp_approx")
        if gov is not None and approx is not None and len(approx.regrets) == len(gov.regrets):
            diff = max(abs(a - b) for a, b in zip(approx.regrets, gov.regrets, strict=True))
            lines.append(f"cross-check: largest per-replication |batched_rcp_approx - batched_governed| = {diff:.3g}")
    if speed is not None:
        lines.append("")
        lines.extend(format_speed(speed, cfg.k))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    """Command line -> configuration."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizon", type=int, default=None, help="clicks per run (default 100000; --quick 10000)")
    ap.add_argument("--reps", type=int, default=None, help="replications (default 20; --quick 3)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.02])
    ap.add_argument("--batch", type=int, default=1000, help="(first) batch size of the batched policies")
    ap.add_argument("--batch-growth", type=float, default=1.0, help="batch size multiplier per cycle (1 = fixed)")
    ap.add_argument("--batch-max", type=int, default=1_000_000, help="largest batch when growing")
    ap.add_argument("--mc-samples", type=int, default=10_000, help="Monte Carlo draws per allocation")
    ap.add_argument("--mab-reps", type=int, default=None, help="replications for MABWiser (default: --reps)")
    ap.add_argument("--mab-horizon", type=int, default=None, help="horizon for MABWiser (default: --horizon)")
    ap.add_argument("--mab-fit-every", type=int, default=100, help="clicks between MABWiser partial_fit calls")
    ap.add_argument("--ts-engine", choices=["numpy", "python"], default="numpy")
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    ap.add_argument(
        "--floor", type=float, default=None, help="exploration_floor of the Python cross-check only (default: shipped)"
    )
    ap.add_argument(
        "--max-change", type=float, default=None, help="max_change_per_cycle of the cross-check only (default: shipped)"
    )
    ap.add_argument("--opa-url", default=None, help="judge batched_governed with this OPA (default: start one)")
    ap.add_argument("--opa-bin", type=Path, default=DEFAULT_OPA_BIN, help="OPA binary to start (default %(default)s)")
    ap.add_argument("--seed", type=int, default=2011)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    speed_opts = ap.add_mutually_exclusive_group()
    speed_opts.add_argument("--no-speed", action="store_true", help="skip the arm-choice speed measurement")
    speed_opts.add_argument(
        "--speed-only", action="store_true", help="only the arm-choice speed measurement (no simulation, no OPA)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: horizon 10000, 3 replications")
    ns = ap.parse_args(argv)
    if ns.horizon is None:
        ns.horizon = 10_000 if ns.quick else 100_000
    if ns.reps is None:
        ns.reps = 3 if ns.quick else 20
    cfg = BenchConfig(
        k=ns.k,
        eps=tuple(ns.eps),
        horizon=ns.horizon,
        reps=ns.reps,
        batch=ns.batch,
        batch_growth=ns.batch_growth,
        batch_max=ns.batch_max,
        mc_samples=ns.mc_samples,
        mab_reps=ns.mab_reps,
        mab_horizon=ns.mab_horizon,
        mab_fit_every=ns.mab_fit_every,
        ts_engine=ns.ts_engine,
        policies=tuple(ns.policies),
        seed=ns.seed,
        jobs=ns.jobs,
        rcp_floor=ns.floor,
        rcp_max_change=ns.max_change,
        opa_url=ns.opa_url,
        opa_bin=str(ns.opa_bin),
    )
    return cfg, ns


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    cfg, ns = parse_args(argv)
    t0 = time.perf_counter()
    results = [] if ns.speed_only else run_benchmark(cfg)
    wall = time.perf_counter() - t0
    speed = None if ns.no_speed else measure_speed(cfg.k, n_alias=200_000 if ns.quick else 1_000_000)
    if ns.speed_only and speed is not None:
        print("\n".join(format_speed(speed, cfg.k)))
    else:
        print(format_report(cfg, results, speed))
        print(f"\nsimulation wall time {wall:.1f} s with {cfg.jobs} process(es)")
    if ns.json is not None:
        payload = {
            "config": asdict(cfg),
            "results": [asdict(r) | {"mean": r.mean, "stderr": r.stderr} for r in results],
            "speed": asdict(speed) if speed is not None else None,
            "wall_seconds": wall,
        }
        ns.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
