"""EPC-based traffic re-weighting with smoothing, an exploration share and a per-arm floor.

Registry name ``traffic_optimizer``. Each cycle, for every arm:

1. ``value_now`` = EPC of the clicks since the previous cycle: ``delta revenue / delta clicks``
   (``objective="profit_per_click"`` uses ``delta (revenue - cost) / delta clicks``). The cumulative
   counters seen last cycle are in ``state``; without state (first cycle, or counters reset) the
   cumulative EPC is used.
2. ``smoothed = smoothing * value_now + (1 - smoothing) * smoothed_prev`` (exponential smoothing
   across cycles; the first value is ``value_now``; a cycle without new clicks keeps the previous
   value).
3. Arms with at least ``min_clicks`` cumulative clicks compete for the *exploit* share
   ``1 - explore_share`` (Affise-style 80/20 by default): ``exploit="best"`` gives it to the arm(s)
   with the best smoothed value (split on ties), ``exploit="proportional"`` splits it in
   proportion to positive smoothed values. If no arm qualifies, or no qualifying arm has a
   positive value, the exploit share is split equally among the qualifying arms (all arms if none).
4. The *explore* share ``explore_share`` is split equally over all arms.
5. Every arm is lifted to at least ``floor`` (Binom-style 5% minimum by default; capped at 1/K),
   the others scaled down proportionally.

``evidence["state"]`` carries the smoothed values and counters; pass it back as ``state=``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from algorithms.base import AllocationProposal, ArmStats, check_unique_arms, weights_from_array
from algorithms.constraints import apply_floor
from algorithms.params import ParamSchema, as_float, as_int, as_str, validate_against


def _prev_arm(state: Mapping[str, object] | None, arm_id: str) -> tuple[int, float, float, float] | None:
    if not state:
        return None
    arms = state.get("arms")
    if not isinstance(arms, Mapping):
        return None
    prev = arms.get(arm_id)
    if not isinstance(prev, Mapping):
        return None
    try:
        out = (int(prev["clicks"]), float(prev["revenue"]), float(prev["cost"]), float(prev["smoothed"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(x) for x in out) or out[0] < 0:
        return None
    return out


class TrafficOptimizer:
    """EPC re-weighting: exploration share + exploit share to the best smoothed EPC, with a floor."""

    NAME: ClassVar[str] = "traffic_optimizer"
    VERSION: ClassVar[str] = "1.0.0"
    DESCRIPTION: ClassVar[str] = (
        "Earnings-per-click re-weighting: exponentially smoothed EPC per arm, a fixed exploration "
        "share spread over all arms, the rest to the best EPC, and a minimum share per arm."
    )
    PARAMS: ClassVar[ParamSchema] = {
        "smoothing": {
            "type": "number",
            "default": 0.3,
            "exclusiveMinimum": 0.0,
            "maximum": 1.0,
            "description": "Weight of the newest cycle's EPC in the exponential smoothing (1 = none).",
        },
        "explore_share": {
            "type": "number",
            "default": 0.2,
            "minimum": 0.0,
            "maximum": 1.0,
            "description": "Share of traffic spread equally over all arms (exploration).",
        },
        "floor": {
            "type": "number",
            "default": 0.05,
            "minimum": 0.0,
            "maximum": 0.5,
            "description": "Minimum share of every arm (capped at 1/K).",
        },
        "min_clicks": {
            "type": "integer",
            "default": 100,
            "minimum": 0,
            "maximum": 10_000_000,
            "description": "Clicks an arm needs before it can receive the exploit share.",
        },
        "objective": {
            "type": "string",
            "default": "epc",
            "enum": ["epc", "profit_per_click"],
            "description": "Value per click: revenue/clicks or (revenue - cost)/clicks.",
        },
        "exploit": {
            "type": "string",
            "default": "best",
            "enum": ["best", "proportional"],
            "description": "Exploit share to the best arm(s) or in proportion to positive values.",
        },
    }

    def __init__(
        self,
        *,
        smoothing: float = 0.3,
        explore_share: float = 0.2,
        floor: float = 0.05,
        min_clicks: int = 100,
        objective: str = "epc",
        exploit: str = "best",
    ) -> None:
        validate_against(
            self.PARAMS,
            {
                "smoothing": smoothing,
                "explore_share": explore_share,
                "floor": floor,
                "min_clicks": min_clicks,
                "objective": objective,
                "exploit": exploit,
            },
            self.NAME,
        )
        self.smoothing = float(smoothing)
        self.explore_share = float(explore_share)
        self.floor = float(floor)
        self.min_clicks = int(min_clicks)
        self.objective = objective
        self.exploit = exploit

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> TrafficOptimizer:
        """Build from a (possibly partial) parameter dict, validating it against ``PARAMS``."""
        v = validate_against(cls.PARAMS, params, cls.NAME)
        return cls(
            smoothing=as_float(v["smoothing"]),
            explore_share=as_float(v["explore_share"]),
            floor=as_float(v["floor"]),
            min_clicks=as_int(v["min_clicks"]),
            objective=as_str(v["objective"]),
            exploit=as_str(v["exploit"]),
        )

    def _value(self, revenue: float, cost: float, clicks: int) -> float:
        if clicks <= 0:
            return 0.0
        gain = revenue - cost if self.objective == "profit_per_click" else revenue
        return gain / clicks

    def smoothed_values(
        self, stats: Sequence[ArmStats], state: Mapping[str, object] | None = None
    ) -> tuple[list[float], list[float | None]]:
        """Smoothed value per arm and this cycle's raw value (``None`` if no new clicks)."""
        smoothed: list[float] = []
        cycle: list[float | None] = []
        for st in stats:
            prev = _prev_arm(state, st.arm_id)
            if prev is None or st.clicks < prev[0]:
                now = self._value(st.revenue, st.cost, st.clicks)
                smoothed.append(now)
                cycle.append(now if st.clicks > 0 else None)
                continue
            d_clicks = st.clicks - prev[0]
            if d_clicks == 0:
                smoothed.append(prev[3])
                cycle.append(None)
                continue
            now = self._value(st.revenue - prev[1], st.cost - prev[2], d_clicks)
            smoothed.append(self.smoothing * now + (1.0 - self.smoothing) * prev[3])
            cycle.append(now)
        return smoothed, cycle

    def propose(
        self,
        stats: Sequence[ArmStats],
        current: Mapping[str, float] | None,
        rng: np.random.Generator,
        *,
        state: Mapping[str, object] | None = None,
    ) -> AllocationProposal:
        """Propose weights by the rule in the module docstring (``rng`` is not needed: deterministic)."""
        ids = check_unique_arms(stats)
        k = len(ids)
        smoothed, cycle = self.smoothed_values(stats, state)
        values = np.array(smoothed)
        eligible = np.array([st.clicks >= self.min_clicks for st in stats])
        if not np.any(eligible):
            eligible = np.ones(k, dtype=bool)
        exploit = np.zeros(k)
        elig_vals = np.where(eligible, values, -np.inf)
        best = float(np.max(elig_vals))
        if best <= 0.0:
            exploit[eligible] = 1.0 / int(eligible.sum())
        elif self.exploit == "best":
            winners = eligible & (values >= best - 1e-12 * max(1.0, abs(best)))
            exploit[winners] = 1.0 / int(winners.sum())
        else:
            pos = np.where(eligible, np.maximum(values, 0.0), 0.0)
            exploit = pos / float(pos.sum())
        raw = self.explore_share / k + (1.0 - self.explore_share) * exploit
        weights = weights_from_array(ids, apply_floor(raw, self.floor))
        best_arm = ids[int(np.argmax(elig_vals))] if best > 0.0 else None
        arms_ev: dict[str, object] = {}
        state_arms: dict[str, object] = {}
        for i, st in enumerate(stats):
            arms_ev[st.arm_id] = {
                "clicks": st.clicks,
                "conversions": st.conversions,
                "revenue": st.revenue,
                "cost": st.cost,
                "epc": st.epc,
                "value_cycle": cycle[i],
                "value_smoothed": smoothed[i],
                "eligible": bool(st.clicks >= self.min_clicks),
            }
            state_arms[st.arm_id] = {
                "clicks": st.clicks,
                "revenue": st.revenue,
                "cost": st.cost,
                "smoothed": smoothed[i],
            }
        max_change = None
        if current is not None:
            keys = set(weights) | set(current)
            max_change = max(abs(weights.get(a, 0.0) - float(current.get(a, 0.0))) for a in keys)
        evidence: dict[str, object] = {
            "method": "smoothed_epc_explore_exploit_floor",
            "params": {
                "smoothing": self.smoothing,
                "explore_share": self.explore_share,
                "floor": self.floor,
                "min_clicks": self.min_clicks,
                "objective": self.objective,
                "exploit": self.exploit,
            },
            "arms": arms_ev,
            "best_arm": best_arm,
            "max_abs_change": max_change,
            "state": {"arms": state_arms},
        }
        return AllocationProposal(weights, evidence, self.NAME, self.VERSION)
