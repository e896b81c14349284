"""Anomaly detection on conversion rate, EPC and spend against their recent baselines.

Pure functions over counts (no database, no Flask): the snapshot feeds them the last few hours and
the week before, per link arm and per campaign. The findings are evidence twice over: the model
reads them in its snapshot, and the `ai_supervisor` policy lets the AI pause a link or an offer on
its own only when one of them names that target (otherwise a person decides).

* Conversion rate: a one-sided two-proportion z-test (recent against baseline), reported when the
  recent window has enough clicks, the drop is large enough to matter and z is beyond the threshold.
* EPC (revenue per click): reported when it fell by at least `min_drop` and the baseline conversion
  rate predicts enough conversions in the recent window for the fall to be more than noise.
* Spend: today's spend projected over the whole day against the average daily spend of the week
  before, once enough of the day has passed.
* Drift: the arm with the best conversion rate changed between the baseline and the recent window,
  both with enough clicks (a non-stationary market, where a bandit should forget faster)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Counts:
    clicks: int = 0
    conversions: int = 0
    revenue: float = 0.0

    @property
    def cr(self) -> float | None:
        return self.conversions / self.clicks if self.clicks else None

    @property
    def epc(self) -> float | None:
        return self.revenue / self.clicks if self.clicks else None

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.clicks + other.clicks, self.conversions + other.conversions, self.revenue + other.revenue)

    def as_dict(self) -> dict[str, Any]:
        cr, epc = self.cr, self.epc
        return {
            "clicks": self.clicks,
            "conversions": self.conversions,
            "revenue": round(self.revenue, 4),
            "cr": round(cr, 6) if cr is not None else None,
            "epc": round(epc, 6) if epc is not None else None,
        }


@dataclass(frozen=True)
class Thresholds:
    min_clicks: int = 100  # clicks in the recent window before a rate is judged
    z: float = 3.0  # |z| of the conversion-rate test
    min_drop: float = 0.5  # relative fall that matters (0.5: halved)
    critical_drop: float = 0.9  # relative fall that makes it critical
    min_expected_conversions: float = 5.0  # EPC: conversions the baseline predicts in the window
    spend_spike: float = 2.0  # projected spend / baseline daily spend
    min_day_fraction: float = 0.25  # share of the day elapsed before spend is projected


@dataclass(frozen=True)
class Anomaly:
    code: str  # conversion_rate_drop | epc_drop | spend_spike | best_arm_changed
    severity: str  # warning | critical
    target_kind: str  # link | offer | campaign
    target_id: str
    link_id: str | None
    metric: str
    recent: float | None
    baseline: float | None
    score: float | None  # z for rate tests, the ratio for spend
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def conversion_z(recent: Counts, baseline: Counts) -> float | None:
    """z of recent CR against baseline CR (pooled two-proportion test); None when undefined."""
    if not recent.clicks or not baseline.clicks:
        return None
    pooled = (recent.conversions + baseline.conversions) / (recent.clicks + baseline.clicks)
    variance = pooled * (1 - pooled) * (1 / recent.clicks + 1 / baseline.clicks)
    if variance <= 0:
        return None
    return ((recent.cr or 0.0) - (baseline.cr or 0.0)) / math.sqrt(variance)


def relative_drop(recent: float | None, baseline: float | None) -> float | None:
    if recent is None or baseline is None or baseline <= 0:
        return None
    return max(0.0, 1.0 - recent / baseline)


def conversion_rate_drop(
    recent: Counts, baseline: Counts, t: Thresholds, *, target_kind: str, target_id: str, link_id: str
) -> Anomaly | None:
    if recent.clicks < t.min_clicks:
        return None
    drop = relative_drop(recent.cr, baseline.cr)
    z = conversion_z(recent, baseline)
    if drop is None or z is None or drop < t.min_drop or z > -t.z:
        return None
    severity = "critical" if drop >= t.critical_drop else "warning"
    return Anomaly(
        "conversion_rate_drop",
        severity,
        target_kind,
        target_id,
        link_id,
        "cr",
        recent.cr,
        baseline.cr,
        z,
        f"conversion rate {recent.cr:.4f} over {recent.clicks} clicks against a baseline of {baseline.cr:.4f} "
        f"(down {drop:.0%}, z {z:.1f})",
    )


def epc_drop(recent: Counts, baseline: Counts, t: Thresholds, *, link_id: str) -> Anomaly | None:
    if recent.clicks < t.min_clicks or baseline.cr is None:
        return None
    drop = relative_drop(recent.epc, baseline.epc)
    expected = baseline.cr * recent.clicks
    if drop is None or drop < t.min_drop or expected < t.min_expected_conversions:
        return None
    critical = drop >= t.critical_drop and expected >= 2 * t.min_expected_conversions
    return Anomaly(
        "epc_drop",
        "critical" if critical else "warning",
        "link",
        link_id,
        link_id,
        "epc",
        recent.epc,
        baseline.epc,
        None,
        f"EPC {recent.epc:.4f} over {recent.clicks} clicks against a baseline of {baseline.epc:.4f} "
        f"(down {drop:.0%}; {expected:.1f} conversions expected, {recent.conversions} seen)",
    )


def best_arm_changed(
    recent: dict[str, Counts], baseline: dict[str, Counts], t: Thresholds, *, link_id: str
) -> Anomaly | None:
    """The arm with the best CR changed, significantly (the new best beats the old one recently)."""
    judged = [
        a for a in recent if recent[a].clicks >= t.min_clicks and baseline.get(a, Counts()).clicks >= t.min_clicks
    ]
    if len(judged) < 2:
        return None
    old_best = max(judged, key=lambda a: (baseline[a].cr or 0.0, a))
    new_best = max(judged, key=lambda a: (recent[a].cr or 0.0, a))
    if old_best == new_best:
        return None
    z = conversion_z(recent[new_best], recent[old_best])
    if z is None or z < t.z:
        return None
    return Anomaly(
        "best_arm_changed",
        "warning",
        "link",
        link_id,
        link_id,
        "cr",
        recent[new_best].cr,
        recent[old_best].cr,
        z,
        f"offer {new_best} now converts best ({recent[new_best].cr:.4f}); {old_best} led the baseline and now "
        f"converts at {recent[old_best].cr:.4f} (z {z:.1f})",
    )


def link_anomalies(
    link_id: str, recent: dict[str, Counts], baseline: dict[str, Counts], t: Thresholds
) -> list[Anomaly]:
    """Per-arm conversion-rate drops, the link's EPC drop and a change of best arm."""
    found: list[Anomaly] = []
    for offer_id in sorted(recent):
        hit = conversion_rate_drop(
            recent[offer_id],
            baseline.get(offer_id, Counts()),
            t,
            target_kind="offer",
            target_id=offer_id,
            link_id=link_id,
        )
        if hit is not None:
            found.append(hit)
    total_recent = sum(recent.values(), Counts())
    total_baseline = sum(baseline.values(), Counts())
    for hit in (
        epc_drop(total_recent, total_baseline, t, link_id=link_id),
        best_arm_changed(recent, baseline, t, link_id=link_id),
    ):
        if hit is not None:
            found.append(hit)
    return found


def spend_spike(
    campaign_id: str,
    spend_today: float,
    baseline_daily: float | None,
    day_fraction: float,
    t: Thresholds,
    *,
    link_id: str | None = None,
) -> Anomaly | None:
    if baseline_daily is None or baseline_daily <= 0 or day_fraction < t.min_day_fraction:
        return None
    projected = spend_today / day_fraction
    ratio = projected / baseline_daily
    if ratio < t.spend_spike:
        return None
    return Anomaly(
        "spend_spike",
        "critical" if ratio >= 2 * t.spend_spike else "warning",
        "campaign",
        campaign_id,
        link_id,
        "spend",
        projected,
        baseline_daily,
        ratio,
        f"spend today projects to {projected:.2f} for the day, {ratio:.1f}x the daily average {baseline_daily:.2f}",
    )
