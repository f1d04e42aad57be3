"""Inline SVG charts for the HTML report: no scripts, no external files.

Every label is escaped. Each data point carries a ``<title>`` so that a browser shows its
exact value on hover.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04")
WIDTH = 720
HEIGHT = 300
MARGIN_LEFT = 64
MARGIN_RIGHT = 44
MARGIN_TOP = 16
MARGIN_BOTTOM = 64

Series = dict[str, list[float]]


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Return evenly spaced round tick values from 0 to at least ``maximum``."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw_step = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    top = math.ceil(maximum / step) * step
    return [round(i * step, 10) for i in range(int(round(top / step)) + 1)]


def line_chart(
    title: str,
    categories: Sequence[str],
    series: Series,
    value_format: Callable[[float], str] = lambda value: f"{value:g}",
) -> str:
    """Return an SVG line chart: one line per series over the x ``categories``."""
    ticks = nice_ticks(max((v for values in series.values() for v in values), default=0))
    plot = _Plot(ticks)
    parts = [plot.axes(title, ticks, value_format)]
    parts.append(plot.x_labels(categories))
    step = plot.width / max(1, len(categories) - 1) if len(categories) > 1 else 0
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        offset = plot.width / 2 if len(categories) == 1 else 0
        points = [(plot.left + offset + i * step, plot.y(v)) for i, v in enumerate(values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(
            f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" '
            f'points="{path}"/>'
        )
        for (x, y), category, value in zip(points, categories, values, strict=True):
            label = escape(f"{name}, {category}: {value_format(value)}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}">'
                f"<title>{label}</title></circle>"
            )
    parts.append(_legend(list(series)))
    return _svg(title, parts)


def column_chart(
    title: str,
    categories: Sequence[str],
    series: Series,
    value_format: Callable[[float], str] = lambda value: f"{value:g}",
    colors: dict[str, str] | None = None,
) -> str:
    """Return an SVG chart of grouped vertical bars: one group per category.

    ``colors`` maps series names to fill colours, so that several charts colour the same
    series alike. Series that it does not name take palette colours in order.
    """
    colors = _colors(list(series), colors)
    ticks = nice_ticks(max((v for values in series.values() for v in values), default=0))
    plot = _Plot(ticks)
    parts = [plot.axes(title, ticks, value_format), plot.x_labels(categories, centered=True)]
    group = plot.width / max(1, len(categories))
    bar = group * 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        color = colors[name]
        for position, (category, value) in enumerate(zip(categories, values, strict=True)):
            if value <= 0:
                continue
            x = plot.left + position * group + group * 0.1 + index * bar
            y = plot.y(value)
            label = escape(f"{name}, {category}: {value_format(value)}")
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{plot.bottom - y:.1f}" fill="{color}"><title>{label}</title></rect>'
            )
    parts.append(_legend(list(series), colors))
    return _svg(title, parts)


def bar_chart(
    title: str,
    items: Sequence[tuple[str, float]],
    maximum: float,
    value_format: Callable[[float], str] = lambda value: f"{value:g}",
) -> str:
    """Return an SVG chart of horizontal bars, one per (label, value), scaled to ``maximum``."""
    row = 26
    label_width = 240
    height = MARGIN_TOP + 24 + row * max(1, len(items)) + 16
    track = WIDTH - label_width - MARGIN_RIGHT - 64
    parts = [f'<text class="title" x="{MARGIN_LEFT}" y="{MARGIN_TOP + 4}">{escape(title)}</text>']
    for index, (label, value) in enumerate(items):
        y = MARGIN_TOP + 24 + index * row
        length = 0.0 if maximum <= 0 else track * min(value, maximum) / maximum
        shown = escape(value_format(value))
        parts.append(
            f'<text class="label" x="{label_width - 8}" y="{y + 15}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        parts.append(
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{length:.1f}" '
            f'height="{row - 8}" fill="{PALETTE[0]}"><title>{escape(label)}: {shown}</title></rect>'
        )
        parts.append(
            f'<text class="value" x="{label_width + length + 6:.1f}" y="{y + 15}">{shown}</text>'
        )
    return _svg(title, parts, height)


class _Plot:
    """Coordinates of the plotting area for a value axis that runs from 0 to ticks[-1]."""

    def __init__(self, ticks: list[float]) -> None:
        self.top_value = ticks[-1] or 1.0
        self.left = MARGIN_LEFT
        self.top = MARGIN_TOP + 20
        self.bottom = HEIGHT - MARGIN_BOTTOM
        self.width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * value / self.top_value

    def axes(self, title: str, ticks: list[float], value_format: Callable[[float], str]) -> str:
        parts = [f'<text class="title" x="{self.left}" y="{MARGIN_TOP + 4}">{escape(title)}</text>']
        for tick in ticks:
            y = self.y(tick)
            parts.append(
                f'<line class="grid" x1="{self.left}" x2="{self.left + self.width}" '
                f'y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{escape(value_format(tick))}</text>"
            )
        return "".join(parts)

    def x_labels(self, categories: Sequence[str], centered: bool = False) -> str:
        parts = []
        count = len(categories)
        for index, category in enumerate(categories):
            if centered or count == 1:
                x = self.left + (index + 0.5) * self.width / max(1, count)
            else:
                x = self.left + index * self.width / (count - 1)
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{self.bottom + 18}" '
                f'text-anchor="middle">{escape(category)}</text>'
            )
        return "".join(parts)


def _colors(names: list[str], given: dict[str, str] | None) -> dict[str, str]:
    given = given or {}
    return {name: given.get(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(names)}


def _legend(names: list[str], colors: dict[str, str] | None = None) -> str:
    colors = _colors(names, colors)
    parts = []
    x = MARGIN_LEFT
    y = HEIGHT - 18
    for name in names:
        color = colors[name]
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
            f'<text class="legend" x="{x + 14}" y="{y}">{escape(name)}</text>'
        )
        x += 24 + 8 * len(name)
    return "".join(parts)


def _svg(title: str, parts: list[str], height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" aria-label="{escape(title)}">'
        + "".join(parts)
        + "</svg>"
    )
