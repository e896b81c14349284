"""Server-side charts for the admin pages, drawn as inline SVG geometry (the pages' CSP allows no
inline scripts, and a picture of a few dozen allocations needs none).

Pure functions: allocations in, coordinates and SVG path strings out; the templates only place them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

PALETTE = ("#2753d9", "#0a7b3e", "#b42318", "#a15c00", "#7a3cc8", "#00838f", "#c2185b", "#5b6475", "#827717", "#3949ab")


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class AllocationPoint:
    """One approved allocation: when it became current and its weights (offer id -> share)."""

    at: datetime
    weights: Mapping[str, float]


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    color: str
    path: str  # SVG path data, a step line: each allocation holds until the next one
    last: float


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    markers: list[float]  # x of each allocation change

    @property
    def right(self) -> int:
        return self.left + self.plot_width

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height


def allocation_chart(
    points: Sequence[AllocationPoint],
    labels: Mapping[str, str],
    now: datetime,
    *,
    width: int = 760,
    height: int = 240,
) -> Chart | None:
    """Each arm's share over time as step lines, oldest allocation on the left, `now` on the right.
    None when there is nothing to draw."""
    if not points:
        return None
    ordered = sorted(points, key=lambda p: p.at)
    left, top, right_pad, bottom_pad = 44, 12, 12, 28
    plot_w, plot_h = width - left - right_pad, height - top - bottom_pad
    start = ordered[0].at
    end = max(now, ordered[-1].at)
    span = (end - start).total_seconds() or 1.0

    def x(at: datetime) -> float:
        return round(left + plot_w * (at - start).total_seconds() / span, 2)

    def y(share: float) -> float:
        return round(top + plot_h * (1.0 - max(0.0, min(1.0, share))), 2)

    keys = sorted({k for p in ordered for k in p.weights}, key=lambda k: (labels.get(k, k), k))
    series = []
    for index, key in enumerate(keys):
        shares = [float(p.weights.get(key, 0.0)) for p in ordered]
        path = [f"M{x(ordered[0].at)},{y(shares[0])}"]
        for point, share in zip(ordered[1:], shares[1:], strict=True):
            path.append(f"H{x(point.at)}V{y(share)}")
        path.append(f"H{x(end)}")
        series.append(Series(key, labels.get(key, key), color(index), "".join(path), shares[-1]))
    y_ticks = [Tick(y(v), f"{int(v * 100)}%") for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    fmt = "%H:%M:%S" if span < 3600 else ("%H:%M" if span < 86400 else "%m-%d %H:%M")
    x_ticks = [Tick(x(start), start.strftime(fmt)), Tick(x(end), end.strftime(fmt))]
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_w,
        plot_height=plot_h,
        series=series,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        markers=[x(p.at) for p in ordered],
    )
