"""A market to test the autopilot against: pure logic, no I/O (the drivers that push its clicks
through the real service are in `server.autopilot.simulation`).

* Arms (offers) with a true conversion rate and payout, optionally restricted to countries or
  devices; rates drift (`piecewise`: the best offer changes at given hours; `random_walk`: a
  Gaussian walk on the log-odds every simulated hour).
* Traffic from sources, each with a cost per click and its own country and device mix.
* Conversions arrive after an exponential delay.
* Baselines computed on exactly the same visits: any fixed allocation (and the best one in
  hindsight, by a grid over the simplex), and an Affise-style "80/20 best EPC" heuristic
  (20 % spread evenly, 80 % to the best EPC observed over the last 7 days, recomputed every
  cycle from the conversions that have arrived). Values are *expected* revenue (rate x payout of
  the arm a visit went to), so policies are compared without conversion noise."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
USER_AGENTS = {
    "desktop": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)",
}


@dataclass(frozen=True)
class ArmSpec:
    offer_id: str
    rate: float  # conversion probability per click at hour 0
    payout: float  # revenue per conversion
    countries: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    id: str
    cpc: float
    share: float  # of all visits
    countries: Mapping[str, float]
    devices: Mapping[str, float]


@dataclass(frozen=True)
class Drift:
    kind: str = "none"  # none | piecewise | random_walk
    changes: tuple[tuple[float, Mapping[str, float]], ...] = ()  # (hour, {offer: new rate})
    sigma: float = 0.15  # random walk: log-odds step per hour


@dataclass(frozen=True)
class Scenario:
    arms: tuple[ArmSpec, ...]
    sources: tuple[Source, ...]
    hours: int = 48
    clicks_per_hour: int = 600
    cycle_minutes: int = 30
    drift: Drift = field(default_factory=Drift)
    delay_mean_minutes: float = 45.0
    algorithm: str = "thompson_sampling"
    params: Mapping[str, object] = field(default_factory=dict)
    seed: int = 7

    @property
    def cycles(self) -> int:
        return max(1, math.ceil(self.hours * 60 / self.cycle_minutes))


def default_scenario(
    *,
    hours: int = 48,
    clicks_per_hour: int = 600,
    cycle_minutes: int = 30,
    drift: str = "piecewise",
    algorithm: str = "thompson_sampling",
    seed: int = 7,
) -> Scenario:
    """Four offers; the best one changes twice (piecewise) or all wander (random walk); one offer
    only converts in FR/DE, one only on mobile; two traffic sources with different mixes."""
    arms = (
        ArmSpec("off_alpha", 0.040, 10.0),
        ArmSpec("off_beta", 0.030, 12.0),
        ArmSpec("off_gamma", 0.020, 15.0, countries=("FR", "DE")),
        ArmSpec("off_delta", 0.050, 5.0, devices=("mobile",)),
    )
    changes: tuple[tuple[float, Mapping[str, float]], ...] = ()
    if drift == "piecewise":
        third = hours / 3
        changes = (
            (third, {"off_alpha": 0.015, "off_beta": 0.045}),
            (2 * third, {"off_beta": 0.020, "off_gamma": 0.050}),
        )
    sources = (
        Source(
            "src_search", 0.18, 0.6, {"FR": 0.5, "DE": 0.2, "US": 0.3}, {"desktop": 0.6, "mobile": 0.3, "tablet": 0.1}
        ),
        Source("src_social", 0.10, 0.4, {"US": 0.6, "GB": 0.2, "FR": 0.2}, {"mobile": 0.8, "desktop": 0.2}),
    )
    params: dict[str, object] = {}
    if algorithm == "thompson_sampling":
        params = {"gamma": 0.9, "n_samples": 4000}
    return Scenario(
        arms=arms,
        sources=sources,
        hours=hours,
        clicks_per_hour=clicks_per_hour,
        cycle_minutes=cycle_minutes,
        drift=Drift(kind=drift, changes=changes),
        algorithm=algorithm,
        params=params,
        seed=seed,
    )


@dataclass(frozen=True)
class Visit:
    index: int
    minute: float  # simulated minutes since the start
    source: str
    country: str
    device: str
    address: str

    @property
    def user_agent(self) -> str:
        return USER_AGENTS[self.device]


class Market:
    """The true state of the world: rates over time, the visit stream, conversion draws."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.arm_ids = [a.offer_id for a in scenario.arms]
        self.arms = {a.offer_id: a for a in scenario.arms}
        rng = np.random.default_rng(scenario.seed)
        self._rates = self._rate_path(rng)  # (hours + 1, K)
        self.visits = self._visit_stream(rng)
        self._conversion_rng = np.random.default_rng(scenario.seed + 1)
        self.values, self.eligible = self._value_matrix()

    # -- the world ------------------------------------------------------------------------------
    def _rate_path(self, rng: np.random.Generator) -> FloatArray:
        s = self.scenario
        hours = s.hours + 1
        base = np.array([a.rate for a in s.arms], dtype=np.float64)
        path = np.tile(base, (hours, 1))
        if s.drift.kind == "piecewise":
            for hour, rates in sorted(s.drift.changes, key=lambda c: c[0]):
                start = int(math.ceil(hour))
                for offer, rate in rates.items():
                    path[start:, self.arm_ids.index(offer)] = rate
        elif s.drift.kind == "random_walk":
            logit = np.log(base / (1 - base))
            steps = rng.normal(0.0, s.drift.sigma, size=(hours, len(base)))
            steps[0] = 0.0
            path = 1 / (1 + np.exp(-(logit + np.cumsum(steps, axis=0))))
        return path

    def rate(self, offer_id: str, minute: float) -> float:
        hour = min(int(minute // 60), self._rates.shape[0] - 1)
        return float(self._rates[hour, self.arm_ids.index(offer_id)])

    def _visit_stream(self, rng: np.random.Generator) -> list[Visit]:
        s = self.scenario
        total = s.hours * s.clicks_per_hour
        minutes = np.sort(rng.uniform(0, s.hours * 60, size=total))
        shares = np.array([src.share for src in s.sources])
        which = rng.choice(len(s.sources), size=total, p=shares / shares.sum())
        visits = []
        for i in range(total):
            src = s.sources[int(which[i])]
            country = _draw(rng, src.countries)
            device = _draw(rng, src.devices)
            address = f"10.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
            visits.append(Visit(i, float(minutes[i]), src.id, country, device, address))
        return visits

    def is_eligible(self, offer_id: str, country: str, device: str) -> bool:
        arm = self.arms[offer_id]
        return (not arm.countries or country in arm.countries) and (not arm.devices or device in arm.devices)

    def _value_matrix(self) -> tuple[FloatArray, BoolArray]:
        """Expected revenue of sending each visit to each arm, and whether the arm may take it."""
        n, k = len(self.visits), len(self.arm_ids)
        values = np.zeros((n, k))
        eligible = np.zeros((n, k), dtype=bool)
        for v in self.visits:
            hour = min(int(v.minute // 60), self._rates.shape[0] - 1)
            for j, offer in enumerate(self.arm_ids):
                eligible[v.index, j] = self.is_eligible(offer, v.country, v.device)
                values[v.index, j] = self._rates[hour, j] * self.arms[offer].payout
        return values, eligible

    def convert(self, offer_id: str, visit: Visit) -> float | None:
        """Draw whether this click converts; the simulated minute its postback arrives, or None.
        A click routed to an offer it is not eligible for never converts."""
        if not self.is_eligible(offer_id, visit.country, visit.device):
            return None
        if self._conversion_rng.random() >= self.rate(offer_id, visit.minute):
            return None
        return visit.minute + float(self._conversion_rng.exponential(self.scenario.delay_mean_minutes))

    def cost(self, visit: Visit) -> float:
        return next(s.cpc for s in self.scenario.sources if s.id == visit.source)

    @property
    def total_cost(self) -> float:
        cpc = {s.id: s.cpc for s in self.scenario.sources}
        return float(sum(cpc[v.source] for v in self.visits))

    # -- baselines ------------------------------------------------------------------------------
    def fixed_value(self, weights: Sequence[float] | FloatArray) -> float:
        """Expected revenue of routing every visit by fixed `weights` (renormalised over the arms
        eligible for the visit, as the click path does; a visit no arm may take earns nothing)."""
        return float(self.fixed_values(np.asarray([weights], dtype=np.float64))[0])

    def fixed_values(self, grid: FloatArray, chunk: int = 64) -> FloatArray:
        out = np.zeros(len(grid))
        masked = np.where(self.eligible, self.values, 0.0)
        elig = self.eligible.astype(np.float64)
        for start in range(0, len(grid), chunk):
            w = grid[start : start + chunk]  # (G, K)
            num = masked @ w.T  # (N, G)
            den = elig @ w.T
            out[start : start + chunk] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0).sum(axis=0)
        return out

    def best_fixed(self, step: float = 0.05) -> tuple[dict[str, float], float]:
        """The best fixed allocation in hindsight over a grid of the simplex, and its value."""
        k = len(self.arm_ids)
        units = round(1 / step)
        grid = np.array(
            [c for c in itertools.product(range(units + 1), repeat=k - 1) if sum(c) <= units], dtype=np.float64
        )
        grid = np.column_stack([grid, units - grid.sum(axis=1)]) / units
        values = self.fixed_values(grid)
        best = int(np.argmax(values))
        return dict(zip(self.arm_ids, map(float, grid[best]), strict=True)), float(values[best])

    def epc_heuristic(self, explore: float = 0.2, window_hours: float = 168.0, seed: int = 11) -> float:
        """Expected revenue of the 80/20 best-EPC heuristic on these visits (own routing and
        conversion draws; EPC from conversions that have arrived by each cycle)."""
        rng = np.random.default_rng(seed)
        k = len(self.arm_ids)
        s = self.scenario
        weights = np.full(k, 1.0 / k)
        routed: list[tuple[float, int]] = []  # (minute, arm)
        arrivals: list[tuple[float, float, int]] = []  # (arrival minute, click minute, arm)
        total = 0.0
        i = 0
        for c in range(1, s.cycles + 1):
            end = c * s.cycle_minutes
            while i < len(self.visits) and self.visits[i].minute < end:
                v = self.visits[i]
                ok = self.eligible[v.index]
                w = np.where(ok, weights, 0.0)
                if w.sum() > 0:
                    arm = int(rng.choice(k, p=w / w.sum()))
                    total += self.values[v.index, arm]
                    routed.append((v.minute, arm))
                    arrived = self.convert(self.arm_ids[arm], v)
                    if arrived is not None:
                        arrivals.append((arrived, v.minute, arm))
                i += 1
            since = end - window_hours * 60
            clicks = np.zeros(k)
            revenue = np.zeros(k)
            for minute, arm in routed:
                if minute >= since:
                    clicks[arm] += 1
            for arrived, minute, arm in arrivals:
                if arrived <= end and minute >= since:
                    revenue[arm] += self.arms[self.arm_ids[arm]].payout
            epc = np.where(clicks > 0, revenue / np.maximum(clicks, 1), 0.0)
            weights = np.full(k, explore / k)
            weights[int(np.argmax(epc))] += 1 - explore
        return total


def _draw(rng: np.random.Generator, mix: Mapping[str, float]) -> str:
    keys = list(mix)
    p = np.array([mix[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


@dataclass
class Tally:
    """What a policy earned on the market."""

    clicks: int = 0
    routed: int = 0
    conversions: int = 0
    revenue: float = 0.0  # realised: postbacks delivered
    expected_revenue: float = 0.0  # rate x payout of each routed click
    cost: float = 0.0
    per_arm: dict[str, int] = field(default_factory=dict)

    @property
    def profit(self) -> float:
        return self.revenue - self.cost

    @property
    def expected_profit(self) -> float:
        return self.expected_revenue - self.cost
