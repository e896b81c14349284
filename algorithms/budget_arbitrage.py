"""Budget arbitrage: move daily budget toward higher-ROI campaigns, paced against daily caps.

Registry name ``budget_arbitrage``. Per campaign *i* (a :class:`~algorithms.base.CampaignStats`):

1. **Adaptive pacing** (Balseiro & Gur 2019, "Learning in repeated auctions with budgets"): a
   dual multiplier ``mu_i`` (the shadow price of the campaign's budget) is updated by the
   projected subgradient step ``mu <- proj_[0, mu_max](mu - eps * (rho - z))`` where ``rho`` is
   the target spend and ``z`` the actual spend over the interval since the last cycle. Here both
   are expressed as a fraction of the interval's target (``rho = 1``, ``z = pace``), so
   ``mu <- clip(mu + eps * (pace - 1), 0, mu_max)`` and ``eps`` is scale-free. ``pace`` uses the
   interval since the previous cycle when ``state`` has it for the same day (and the interval is at
   least ``MIN_INTERVAL`` of a day), otherwise the whole day so far
   (``spend_today / (budget * hours_elapsed_fraction)``); before ``MIN_ELAPSED`` of the day has
   elapsed ``mu`` is kept. The recommended bid shading is ``bid_multiplier = 1 / (1 + mu)``.
2. **Demand**: what the campaign could spend today, ``projected * (1 + mu) * (1 + headroom)``,
   where ``projected = spend_today / hours_elapsed_fraction`` (before ``MIN_ELAPSED``:
   ``max(budget, spend_today)``) and ``(1 + mu)`` undoes the shading (first-order: spend grows
   linearly with the bid multiplier). Demand is clipped to ``[min(spend_today, daily_cap), daily_cap]``.
3. **Floors**: a campaign with known ROI below ``min_roi`` keeps only what it has already spent;
   any other keeps ``min(demand, keep_fraction * current budget)`` (never below what it spent).
4. **ROI ranking**: the rest of ``total_budget`` fills campaigns up to their demand in decreasing
   ROI (``(revenue - cost) / cost``; equal ROI shares in proportion to room). Campaigns without
   known ROI (cost <= ``min_cost``) come last and are not grown beyond their current budget.
5. If the floors alone exceed ``total_budget`` they are scaled down (what was already spent is
   cut last), so the proposal always satisfies ``0 <= budget_i <= daily_cap_i`` and
   ``sum(budget) <= total_budget``. Unallocated budget is reported in the evidence.

``evidence["state"]`` keeps ``mu`` and the spend seen per campaign; pass it back as ``state=``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from algorithms.base import BudgetProposal, CampaignStats
from algorithms.params import ParamSchema, as_float, validate_against

__all__ = ["BudgetArbitrage", "CampaignStats"]

_PACE_CLIP = 10.0
#: Below this fraction of the day (about 15 minutes) spend is too thin to project or pace on.
MIN_ELAPSED = 0.01
#: Shortest interval between two cycles that is paced on its own (about 1.5 minutes).
MIN_INTERVAL = 0.001


def _prev_campaign(state: Mapping[str, object] | None, campaign_id: str) -> tuple[float, float, float] | None:
    if not state:
        return None
    campaigns = state.get("campaigns")
    if not isinstance(campaigns, Mapping):
        return None
    prev = campaigns.get(campaign_id)
    if not isinstance(prev, Mapping):
        return None
    try:
        out = (float(prev["mu"]), float(prev["spend_today"]), float(prev["elapsed"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(x) and x >= 0 for x in out):
        return None
    return out


class BudgetArbitrage:
    """ROI-ranked budget reallocation with Balseiro-Gur adaptive pacing multipliers."""

    NAME: ClassVar[str] = "budget_arbitrage"
    VERSION: ClassVar[str] = "1.0.0"
    DESCRIPTION: ClassVar[str] = (
        "Reallocates daily budgets toward higher-ROI campaigns within daily caps and a total budget, "
        "with adaptive pacing multipliers (Balseiro & Gur 2019) estimating how much each can spend."
    )
    PARAMS: ClassVar[ParamSchema] = {
        "step_size": {
            "type": "number",
            "default": 0.2,
            "exclusiveMinimum": 0.0,
            "maximum": 10.0,
            "description": "Pacing step eps in mu <- clip(mu + eps * (pace - 1), 0, mu_max).",
        },
        "mu_max": {
            "type": "number",
            "default": 5.0,
            "minimum": 0.0,
            "maximum": 1000.0,
            "description": "Upper bound of the pacing multiplier mu.",
        },
        "min_roi": {
            "type": "number",
            "default": 0.0,
            "minimum": -1.0,
            "maximum": 1000.0,
            "description": "Campaigns with known ROI below this keep only what they already spent.",
        },
        "keep_fraction": {
            "type": "number",
            "default": 0.5,
            "minimum": 0.0,
            "maximum": 1.0,
            "description": "Share of its current budget a non-losing campaign keeps at least.",
        },
        "headroom": {
            "type": "number",
            "default": 0.2,
            "minimum": 0.0,
            "maximum": 10.0,
            "description": "Extra room over projected spend when estimating demand.",
        },
        "min_cost": {
            "type": "number",
            "default": 0.0,
            "minimum": 0.0,
            "maximum": 1e12,
            "description": "Cost needed before a campaign's ROI counts as known.",
        },
    }

    def __init__(
        self,
        *,
        step_size: float = 0.2,
        mu_max: float = 5.0,
        min_roi: float = 0.0,
        keep_fraction: float = 0.5,
        headroom: float = 0.2,
        min_cost: float = 0.0,
    ) -> None:
        validate_against(
            self.PARAMS,
            {
                "step_size": step_size,
                "mu_max": mu_max,
                "min_roi": min_roi,
                "keep_fraction": keep_fraction,
                "headroom": headroom,
                "min_cost": min_cost,
            },
            self.NAME,
        )
        self.step_size = float(step_size)
        self.mu_max = float(mu_max)
        self.min_roi = float(min_roi)
        self.keep_fraction = float(keep_fraction)
        self.headroom = float(headroom)
        self.min_cost = float(min_cost)

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> BudgetArbitrage:
        """Build from a (possibly partial) parameter dict, validating it against ``PARAMS``."""
        v = validate_against(cls.PARAMS, params, cls.NAME)
        return cls(
            step_size=as_float(v["step_size"]),
            mu_max=as_float(v["mu_max"]),
            min_roi=as_float(v["min_roi"]),
            keep_fraction=as_float(v["keep_fraction"]),
            headroom=as_float(v["headroom"]),
            min_cost=as_float(v["min_cost"]),
        )

    def pace(self, c: CampaignStats, state: Mapping[str, object] | None) -> tuple[float, float | None]:
        """(previous mu, pace ratio over the last interval or the day so far; ``None`` if unknown)."""
        prev = _prev_campaign(state, c.campaign_id)
        mu_prev = min(prev[0], self.mu_max) if prev is not None else 0.0
        e = c.hours_elapsed_fraction
        if prev is not None and prev[2] + MIN_INTERVAL <= e and prev[1] <= c.spend_today:
            target = c.budget * (e - prev[2])
            spent = c.spend_today - prev[1]
        elif e >= MIN_ELAPSED:
            target = c.budget * e
            spent = c.spend_today
        else:
            return mu_prev, None
        if target > 0.0:
            return mu_prev, min(spent / target, _PACE_CLIP)
        return mu_prev, (_PACE_CLIP if spent > 0.0 else None)

    def propose(
        self,
        campaigns: Sequence[CampaignStats],
        total_budget: float,
        *,
        state: Mapping[str, object] | None = None,
    ) -> BudgetProposal:
        """Propose daily budgets by the rule in the module docstring."""
        total = float(total_budget)
        if not math.isfinite(total) or total < 0.0:
            raise ValueError(f"total_budget must be finite and >= 0, got {total_budget!r}")
        ids = [c.campaign_id for c in campaigns]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate campaign ids in {ids}")
        n = len(campaigns)
        mu = np.zeros(n)
        mu_prev = np.zeros(n)
        paces: list[float | None] = []
        lower = np.zeros(n)
        demand = np.zeros(n)
        floor = np.zeros(n)
        cap_fill = np.zeros(n)
        roi: list[float | None] = []
        projected = np.zeros(n)
        for i, c in enumerate(campaigns):
            m0, pace = self.pace(c, state)
            mu_prev[i] = m0
            mu[i] = m0 if pace is None else min(max(m0 + self.step_size * (pace - 1.0), 0.0), self.mu_max)
            paces.append(pace)
            e = c.hours_elapsed_fraction
            projected[i] = c.spend_today / e if e >= MIN_ELAPSED else max(c.budget, c.spend_today)
            lower[i] = min(c.spend_today, c.daily_cap)
            demand[i] = min(max(projected[i] * (1.0 + mu[i]) * (1.0 + self.headroom), lower[i]), c.daily_cap)
            r = (c.revenue - c.cost) / c.cost if c.cost > self.min_cost and c.cost > 0 else None
            roi.append(r)
            if r is not None and r < self.min_roi:
                floor[i] = lower[i]
                cap_fill[i] = lower[i]
            else:
                floor[i] = max(lower[i], min(demand[i], self.keep_fraction * c.budget))
                cap_fill[i] = demand[i] if r is not None else max(floor[i], min(demand[i], c.budget))
        budgets = self._fill(total, lower, floor, cap_fill, roi)
        s = float(budgets.sum())
        if s > total > 0.0:
            budgets *= total / s
        elif total == 0.0:
            budgets[:] = 0.0
        rank_order = sorted((i for i in range(n) if roi[i] is not None), key=lambda i: -(roi[i] or 0.0))
        ranks = {ids[i]: r + 1 for r, i in enumerate(rank_order)}
        camp_ev: dict[str, object] = {}
        state_out: dict[str, object] = {}
        for i, c in enumerate(campaigns):
            camp_ev[c.campaign_id] = {
                "roi": roi[i],
                "roi_rank": ranks.get(c.campaign_id),
                "mu_prev": float(mu_prev[i]),
                "mu": float(mu[i]),
                "pace": paces[i],
                "bid_multiplier": 1.0 / (1.0 + float(mu[i])),
                "projected_spend": float(projected[i]),
                "demand": float(demand[i]),
                "floor": float(floor[i]),
                "budget": c.budget,
                "daily_cap": c.daily_cap,
                "spend_today": c.spend_today,
                "proposed": float(budgets[i]),
            }
            state_out[c.campaign_id] = {
                "mu": float(mu[i]),
                "spend_today": c.spend_today,
                "elapsed": c.hours_elapsed_fraction,
            }
        allocated = float(budgets.sum())
        evidence: dict[str, object] = {
            "method": "roi_ranked_fill_with_adaptive_pacing",
            "params": {
                "step_size": self.step_size,
                "mu_max": self.mu_max,
                "min_roi": self.min_roi,
                "keep_fraction": self.keep_fraction,
                "headroom": self.headroom,
                "min_cost": self.min_cost,
            },
            "total_budget": total,
            "allocated": allocated,
            "unallocated": max(total - allocated, 0.0),
            "floors_scaled": bool(float(floor.sum()) > total),
            "campaigns": camp_ev,
            "state": {"campaigns": state_out},
        }
        out = {c.campaign_id: float(max(budgets[i], 0.0)) for i, c in enumerate(campaigns)}
        return BudgetProposal(out, evidence, self.NAME, self.VERSION)

    @staticmethod
    def _fill(
        total: float,
        lower: np.ndarray,
        floor: np.ndarray,
        cap_fill: np.ndarray,
        roi: Sequence[float | None],
    ) -> np.ndarray:
        n = len(roi)
        sum_floor = float(floor.sum())
        if sum_floor >= total:
            sum_lower = float(lower.sum())
            if sum_lower >= total:
                return lower * (total / sum_lower) if sum_lower > 0 else np.zeros(n)
            scale = (total - sum_lower) / (sum_floor - sum_lower)
            out: np.ndarray = lower + (floor - lower) * scale
            return out
        budgets = floor.copy()
        remaining = total - sum_floor
        known = sorted({r for r in roi if r is not None}, reverse=True)
        groups = [[i for i in range(n) if roi[i] == r] for r in known]
        groups.append([i for i in range(n) if roi[i] is None])
        for group in groups:
            if remaining <= 0.0:
                break
            if not group:
                continue
            idx = np.asarray(group)
            room = np.maximum(cap_fill[idx] - budgets[idx], 0.0)
            need = float(room.sum())
            if need <= 0.0:
                continue
            give = min(remaining, need)
            budgets[idx] += room * (give / need)
            remaining -= give
        return budgets
