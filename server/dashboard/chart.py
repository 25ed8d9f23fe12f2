"""The usage chart as numbers for an SVG template: one bar of tokens per day and, where prices
are known, a line of cost. No JavaScript: the template draws what this computes, and every
label in it is escaped like the rest of the page."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from server.dashboard.figures import DayPoint

__all__ = ["WIDTH", "Bar", "Chart", "chart"]

WIDTH, HEIGHT = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 8, 8, 16, 28


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # "2026-01-02: 1,234 tokens"


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    baseline: float
    bars: list[Bar]
    cost_points: str  # an SVG polyline "x,y x,y"; empty when nothing is priced
    max_tokens: int
    max_cost: Decimal | None
    first: str
    last: str


def chart(points: list[DayPoint]) -> Chart:
    """Bars scaled to the busiest day; the cost line to the costliest (a second scale)."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    top = max((p.total_tokens for p in points), default=0)
    costs = [p.cost for p in points if p.cost is not None]
    top_cost = max(costs, default=None)
    slot = plot_w / max(len(points), 1)
    baseline = _TOP + plot_h
    bars, line = [], []
    for index, point in enumerate(points):
        height = plot_h * point.total_tokens / top if top else 0.0
        x = _LEFT + index * slot
        label = f"{point.day.isoformat()}: {point.total_tokens:,} tokens"
        if point.cost is not None:
            label += f", ${point.cost:,.2f}"
        bars.append(Bar(round(x + slot * 0.1, 2), round(baseline - height, 2),
                        round(max(slot * 0.8, 0.5), 2), round(height, 2), label))  # fmt: skip
        if point.cost is not None and top_cost:
            y = baseline - plot_h * float(point.cost / top_cost)
            line.append(f"{x + slot / 2:.2f},{y:.2f}")
    return Chart(
        width=WIDTH, height=HEIGHT, baseline=baseline, bars=bars,
        cost_points=" ".join(line), max_tokens=top, max_cost=top_cost,
        first=points[0].day.isoformat() if points else "",
        last=points[-1].day.isoformat() if points else "",
    )  # fmt: skip
