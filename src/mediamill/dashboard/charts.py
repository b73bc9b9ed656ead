"""Small server-rendered SVG charts (no library, no script): bars and lines over time buckets.

Colours come from CSS variables, so the charts follow the light and dark themes. Every chart
is an ``img`` with a label, and every bar or point has a ``<title>`` (the exact figure).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

W, H = 600, 150
PAD_L, PAD_R, PAD_T, PAD_B = 44, 8, 10, 22


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × a power of ten that is ≥ ``value`` (the top of the y axis)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude * (1 + 1e-9))


def _label(t: datetime, span_hours: float) -> str:
    if span_hours < 20:
        return t.strftime("%H:%M")
    return t.strftime("%d %b %H:%M") if span_hours <= 48 else t.strftime("%d %b")


def _frame(label: str, top: str, times: Sequence[datetime], body: str) -> Markup:
    span = (times[-1] - times[0]).total_seconds() / 3600 if len(times) > 1 else 1
    ticks = "".join(
        f'<text x="{PAD_L + (W - PAD_L - PAD_R) * i / 2:.0f}" y="{H - 6}" '
        f'text-anchor="{("start", "middle", "end")[i]}" class="axis">{_label(t, span)} UTC</text>'
        for i, t in enumerate((times[0], times[len(times) // 2], times[-1])) if times)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" class="grid"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{W - PAD_R}" y2="{PAD_T}" class="grid faint"/>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + 8}" text-anchor="end" class="axis">{escape(top)}</text>'
        f'<text x="{PAD_L - 4}" y="{H - PAD_B}" text-anchor="end" class="axis">0</text>'
        f"{ticks}{body}</svg>")


def bars(points: Sequence[dict[str, Any]], *, total: str, part: str, line: str | None, label: str) -> Markup:
    """Stacked bars (``part`` of ``total`` highlighted, e.g. failed of finished) and an optional line."""
    if not points:
        return Markup("")
    top = _nice_max(max(max(p[total] for p in points), max((p[line] for p in points), default=0) if line else 0))
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / len(points)
    body = []
    for i, p in enumerate(points):
        x = PAD_L + i * step + step * 0.12
        h_total, h_part = inner_h * p[total] / top, inner_h * p[part] / top
        tip = escape(f"{p['t']:%d %b %H:%M} UTC: {p[total]} {total}, {p[part]} {part}")
        body.append(f'<g><title>{tip}</title>'
                    f'<rect x="{x:.1f}" y="{H - PAD_B - h_total:.1f}" width="{step * 0.76:.1f}" '
                    f'height="{h_total:.1f}" class="bar"/>'
                    f'<rect x="{x:.1f}" y="{H - PAD_B - h_part:.1f}" width="{step * 0.76:.1f}" '
                    f'height="{h_part:.1f}" class="bar bad"/></g>')
    if line:
        body.append(_polyline([p[line] for p in points], top, step, "line alt"))
    return _frame(label, f"{top:g}", [p["t"] for p in points], "".join(body))


def series(points: Sequence[dict[str, Any]], *, key: str, label: str, fmt: Callable[[float], str]) -> Markup:
    """A line over time (gaps where a bucket has no value)."""
    values = [p[key] for p in points]
    present = [v for v in values if v is not None]
    if not points:
        return Markup("")
    top = _nice_max(max(present)) if present else 1.0
    step = (W - PAD_L - PAD_R) / len(points)
    dots = "".join(
        f'<circle cx="{PAD_L + step * (i + 0.5):.1f}" cy="{_y(v, top):.1f}" r="2.5" class="dot">'
        f"<title>{escape(_when(p) + ': ' + fmt(v))}</title></circle>"
        for i, (p, v) in enumerate(zip(points, values, strict=True)) if v is not None)
    body = _polyline(values, top, step, "line") + dots
    return _frame(label, fmt(top), [p["t"] for p in points], body)


def _when(point: dict[str, Any]) -> str:
    return f"{point['t']:%d %b %H:%M} UTC"


def _y(value: float, top: float) -> float:
    return H - PAD_B - (H - PAD_T - PAD_B) * value / top


def _polyline(values: Sequence[float | None], top: float, step: float, cls: str) -> str:
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            runs.append([])
            continue
        runs[-1].append(f"{PAD_L + step * (i + 0.5):.1f},{_y(v, top):.1f}")
    return "".join(f'<polyline points="{" ".join(r)}" class="{cls}"/>' for r in runs if len(r) > 1)


def meter(value: float | None, *, label: str) -> Markup:
    """A thin horizontal gauge (0-100 %)."""
    v = max(0.0, min(100.0, float(value or 0)))
    return Markup('<span class="meter" role="progressbar" aria-label="{}" aria-valuenow="{:.0f}" aria-valuemin="0" '
                  'aria-valuemax="100"><span style="width:{:.1f}%"></span></span>').format(label, v, v)
