"""The cost of a simulated day as an SVG line chart: cumulative cost against the
all-real-time baseline and the theoretical best, by the hour requests arrived. Written
by hand (a few dozen elements), so no plotting dependency."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from proxy.simulate.report import Point, Report

WIDTH, HEIGHT = 820, 420
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 48, 56
SERIES = (
    ("baseline", "all real time", "#9aa0a6", "6 4"),
    ("actual", "costroute", "#1a73e8", ""),
    ("best", "theoretical best", "#188038", "2 3"),
)


def svg(report: Report) -> str:
    points = report.curve or (Point(0, 0, 0, 0),)
    span = max(max(p.hours for p in points), 1e-9)
    hours = _nice(span)
    top = max(max(p.baseline for p in points), max(p.actual for p in points), 1e-9)
    dollars = _nice(top)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(h: float) -> float:
        return LEFT + plot_w * h / hours

    def y(d: float) -> float:
        return TOP + plot_h * (1 - d / dollars)

    share = report.money.realised
    title = (
        f"{report.workload} ({report.scenario}): ${report.money.actual_usd:,.2f} vs "
        f"${report.money.baseline_usd:,.2f} real time, best ${report.money.best_usd:,.2f}"
        + (f"; {100 * share:.1f} % of the possible saving" if share is not None else "")
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in _ticks(dollars):
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#e0e0e0"/>'
        )
        out.append(
            f'<text x="{LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">${tick:,.2f}</text>'
        )
    for tick in _ticks(hours):
        out.append(
            f'<text x="{x(tick):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
            f"{tick:g} h</text>"
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 14}" text-anchor="middle">'
        "simulated time (hours after the start)</text>"
    )
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#5f6368"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="#5f6368"/>'
    )
    for index, (name, label, colour, dash) in enumerate(SERIES):
        coords = " ".join(f"{x(p.hours):.1f},{y(getattr(p, name)):.2f}" for p in _thin(points))
        style = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{style} '
            f'points="{coords}"><title>{escape(label)}</title></polyline>'
        )
        lx = LEFT + 12 + index * 170
        out.append(
            f'<line x1="{lx}" x2="{lx + 24}" y1="{TOP - 10}" y2="{TOP - 10}" '
            f'stroke="{colour}" stroke-width="2"{style}/>'
            f'<text x="{lx + 30}" y="{TOP - 6}">{escape(label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice(value: float) -> float:
    """A round axis end at or above ``value``."""
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else _small(value)
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _small(value: float) -> float:
    magnitude = 1.0
    while magnitude / 10 >= value:
        magnitude /= 10
    return magnitude / 10 if magnitude / 10 >= value else magnitude


def _ticks(end: float, count: int = 5) -> list[float]:
    return [end * i / count for i in range(count + 1)]


def _thin(points: Sequence[Point], limit: int = 600) -> Sequence[Point]:
    """At most ``limit`` points (every n-th, and the last), to keep the file small."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    kept = [points[int(i * step)] for i in range(limit)]
    return [*kept, points[-1]]
