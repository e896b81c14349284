"""Server-side charts for the AI dashboard, as inline SVG geometry (the pages' CSP allows no inline
scripts). Pure functions: numbers in, rectangles and path strings out; templates only place them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.links.charts import color


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Legend:
    label: str
    color: str


@dataclass(frozen=True)
class Line:
    label: str
    color: str
    path: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    rects: list[Rect]
    lines: list[Line]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    legend: list[Legend]

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height

    @property
    def right(self) -> int:
        return self.left + self.plot_width


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** (len(str(int(value))) - 1)
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * magnitude >= value:
            return step * magnitude
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _frame(labels: Sequence[str], top_value: float, width: int, height: int) -> tuple[int, int, int, int, float]:
    left, top = 48, 12
    plot_w, plot_h = width - left - 12, height - top - 28
    return left, top, plot_w, plot_h, _nice_max(top_value)


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    width: int = 760,
    height: int = 220,
    colors: Mapping[str, str] | None = None,
) -> Chart:
    """One bar per label, stacking each series' value (in the series' order)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    left, top, plot_w, plot_h, ymax = _frame(labels, max(totals, default=0.0), width, height)
    slot = plot_w / max(len(labels), 1)
    bar = max(slot * 0.7, 1.0)
    palette = {name: (colors or {}).get(name, color(i)) for i, name in enumerate(series)}
    rects: list[Rect] = []
    for i, label in enumerate(labels):
        base = 0.0
        for name, values in series.items():
            value = float(values[i])
            if value <= 0:
                continue
            y_top = top + plot_h * (1 - (base + value) / ymax)
            h = plot_h * value / ymax
            x = left + slot * i + (slot - bar) / 2
            rects.append(
                Rect(
                    round(x, 2),
                    round(y_top, 2),
                    round(bar, 2),
                    round(h, 2),
                    palette[name],
                    f"{label} {name}: {_fmt(value)}",
                )
            )
            base += value
    return Chart(
        width,
        height,
        left,
        top,
        plot_w,
        plot_h,
        rects,
        [],
        _x_ticks(labels, left, slot),
        [Tick(round(top + plot_h * (1 - f), 2), _fmt(ymax * f)) for f in (0.0, 0.5, 1.0)],
        [Legend(name, palette[name]) for name in series],
    )


def lines(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    width: int = 760,
    height: int = 220,
) -> Chart:
    """One polyline per series over the labels (gaps where a value is None)."""
    values = [v for vs in series.values() for v in vs if v is not None]
    left, top, plot_w, plot_h, ymax = _frame(labels, max(values, default=0.0), width, height)
    slot = plot_w / max(len(labels), 1)
    out: list[Line] = []
    for index, (name, vs) in enumerate(series.items()):
        parts: list[str] = []
        pen_up = True
        for i, v in enumerate(vs):
            if v is None:
                pen_up = True
                continue
            x = round(left + slot * i + slot / 2, 2)
            y = round(top + plot_h * (1 - float(v) / ymax), 2)
            parts.append(f"{'M' if pen_up else 'L'}{x},{y}")
            pen_up = False
        out.append(Line(name, color(index), "".join(parts)))
    return Chart(
        width,
        height,
        left,
        top,
        plot_w,
        plot_h,
        [],
        out,
        _x_ticks(labels, left, slot),
        [Tick(round(top + plot_h * (1 - f), 2), _fmt(ymax * f)) for f in (0.0, 0.5, 1.0)],
        [Legend(line.label, line.color) for line in out],
    )


def _x_ticks(labels: Sequence[str], left: int, slot: float) -> list[Tick]:
    every = max(1, len(labels) // 7)
    return [Tick(round(left + slot * i + slot / 2, 2), label) for i, label in enumerate(labels) if i % every == 0]
