"""Charts as inline SVG strings, drawn in Python: the HTML report needs no JavaScript, no CDN
and no internet. Every chart has a ``<title>`` and text labels so that it reads without
colour."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f",
           "#4a5568", "#e53e3e", "#3182ce", "#718096", "#2f855a")  # fmt: skip
FONT = "font-family='system-ui, sans-serif' font-size='12'"


def _svg(width: int, height: int, title: str, body: list[str], cls: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' class='chart {cls}' role='img' "
        f"viewBox='0 0 {width} {height}' width='{width}' height='{height}' {FONT}>"
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {extra}>{escape(text)}</text>"


def _fmt(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1e3:.1f}k"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.2f}"


def _nice_step(raw: float) -> float:
    """The round step (1, 2, 2.5 or 5 times a power of ten) at or above ``raw``."""
    magnitude: float = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * magnitude >= raw:
            return m * magnitude
    return 10 * magnitude


def heatmap(
    counts: Sequence[Sequence[float]],
    revenue: Sequence[Sequence[float]],
    *,
    title: str = "RFM grid: customers (and revenue) by recency and frequency score",
) -> str:
    """The 5x5 R x F grid, R = 5 on top; shade by customers."""
    cell, left, top = 96, 60, 30
    width, height = left + 5 * cell + 10, top + 5 * cell + 40
    peak = max((max(row) for row in counts), default=0) or 1
    body = [_text(left + 2.5 * cell, 18, "F score (frequency) →", "middle", "font-weight='600'")]
    for ri in range(5):
        r = 5 - ri
        y = top + ri * cell
        body.append(_text(left - 10, y + cell / 2 + 4, f"R={r}", "end"))
        for fi in range(5):
            x = left + fi * cell
            n = counts[r - 1][fi]
            share = n / peak
            shade = f"rgba(43,108,176,{0.08 + 0.85 * share:.3f})"
            colour = "#fff" if share > 0.55 else "#1a202c"
            body.append(
                f"<rect class='cell' x='{x}' y='{y}' width='{cell - 2}' height='{cell - 2}' "
                f"fill='{shade}' rx='4'><title>R={r} F={fi + 1}: {int(n)} customers, revenue "
                f"{revenue[r - 1][fi]:.2f}</title></rect>"
            )
            body.append(
                _text(
                    x + cell / 2,
                    y + cell / 2 - 2,
                    _fmt(n),
                    "middle",
                    f"fill='{colour}' font-size='16' font-weight='600'",
                )
            )
            body.append(
                _text(
                    x + cell / 2,
                    y + cell / 2 + 16,
                    "$" + _fmt(revenue[r - 1][fi]),
                    "middle",
                    f"fill='{colour}'",
                )
            )
    for fi in range(5):
        body.append(
            _text(left + fi * cell + cell / 2, top + 5 * cell + 16, f"F={fi + 1}", "middle")
        )
    body.append(
        _text(
            14,
            top + 2.5 * cell,
            "R score (recency)",
            "middle",
            f"transform='rotate(-90 14 {top + 2.5 * cell})' font-weight='600'",
        )
    )
    return _svg(width, height, title, body, "heatmap")


def paired_bars(
    labels: Sequence[str],
    first: Sequence[float],
    second: Sequence[float] | None,
    *,
    names: tuple[str, str],
    title: str,
    percent: bool = True,
    left: int = 170,
) -> str:
    """Horizontal bars, two per label (e.g. share of customers and share of revenue), or
    one per label when ``second`` is None."""
    groups = [(first, PALETTE[0])] + ([(second, PALETTE[1])] if second is not None else [])
    bar = 13
    row = 8 + bar * len(groups)
    width, height = 720 + left - 170, 40 + row * len(labels)
    peak = max([*first, *(second or []), 1e-9])
    span = width - left - 70
    body = [
        f"<rect x='{left}' y='8' width='12' height='12' fill='{PALETTE[0]}'/>",
        _text(left + 18, 18, names[0]),
    ]
    if second is not None:
        body.append(f"<rect x='{left + 180}' y='8' width='12' height='12' fill='{PALETTE[1]}'/>")
        body.append(_text(left + 198, 18, names[1]))
    for i, label in enumerate(labels):
        y = 32 + i * row
        body.append(_text(left - 8, y + bar * len(groups) / 2 + 4, label, "end"))
        for j, (values, colour) in enumerate(groups):
            v = values[i]
            w = max(span * v / peak, 0.5)
            yy = y + j * bar
            body.append(
                f"<rect class='bar' x='{left}' y='{yy}' width='{w:.1f}' height='{bar - 1}' fill='{colour}'/>"
            )
            shown = f"{100 * v:.1f}%" if percent else _fmt(v)
            body.append(_text(left + w + 4, yy + bar - 3, shown, extra="font-size='11'"))
    return _svg(width, height, title, body, "bars")


def columns(
    labels: Sequence[str],
    series: Sequence[Sequence[float | None]],
    *,
    names: Sequence[str],
    title: str,
    x_title: str = "",
    lines: bool = False,
) -> str:
    """Vertical bars (or lines with points, ``lines=True``) for one or more series."""
    left, top, bottom = 56, 30, 52
    width, height = 720, 300
    inner_w, inner_h = width - left - 16, height - top - bottom
    # A missing value (None: a figure the analysis could not compute) draws no bar or point.
    top_value = max((v for s in series for v in s if v is not None), default=0) or 1
    step = _nice_step(top_value / 4)
    ticks = max(1, math.ceil(top_value / step))
    peak = step * ticks  # the axis ends on a round number
    n = max(len(labels), 1)
    slot = inner_w / n
    body = []
    for k in range(ticks + 1):
        tick = step * k
        y = top + inner_h - inner_h * k / ticks
        body.append(
            f"<line x1='{left}' x2='{width - 16}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e2e8f0'/>"
        )
        body.append(_text(left - 6, y + 4, _fmt(round(tick, 2)), "end", "font-size='11'"))
    for s_i, name in enumerate(names):
        body.append(
            f"<rect x='{left + 150 * s_i}' y='6' width='12' height='12' fill='{PALETTE[s_i]}'/>"
        )
        body.append(_text(left + 150 * s_i + 18, 16, name))
    bw = slot * 0.8 / max(len(series), 1)
    for s_i, values in enumerate(series):
        points = []
        for i, v in enumerate(values):
            if v is None:
                continue
            h = inner_h * v / peak
            if lines:
                cx = left + slot * (i + 0.5)
                cy = top + inner_h - h
                points.append(f"{cx:.1f},{cy:.1f}")
                body.append(
                    f"<circle class='point' cx='{cx:.1f}' cy='{cy:.1f}' r='4' fill='{PALETTE[s_i]}'><title>{escape(labels[i])}: {v:.3f}</title></circle>"
                )
            else:
                x = left + slot * i + slot * 0.1 + bw * s_i
                body.append(
                    f"<rect class='bar' x='{x:.1f}' y='{top + inner_h - h:.1f}' width='{bw:.1f}' height='{h:.1f}' fill='{PALETTE[s_i]}'><title>{escape(labels[i])}: {_fmt(v)}</title></rect>"
                )
        if lines and points:
            body.append(
                f"<polyline fill='none' stroke='{PALETTE[s_i]}' stroke-width='2' points='{' '.join(points)}'/>"
            )
    for i, label in enumerate(labels):
        body.append(
            _text(left + slot * (i + 0.5), top + inner_h + 16, label, "middle", "font-size='11'")
        )
    if x_title:
        body.append(_text(left + inner_w / 2, height - 10, x_title, "middle", "font-weight='600'"))
    return _svg(width, height, title, body, "lines" if lines else "columns")


def trend(
    days: Sequence[str],
    series: Sequence[Sequence[float | None]],
    *,
    names: Sequence[str],
    title: str,
    percent: bool = False,
) -> str:
    """Lines over days (one point per day, ``None`` where a series has no value), with at
    most six date labels on the x axis."""
    left, top, bottom = 60, 30, 40
    width, height = 560, 230
    inner_w, inner_h = width - left - 20, height - top - bottom
    values = [v for s in series for v in s if v is not None]
    high = max(values, default=0.0) or 1.0
    step = _nice_step(high / 4)
    ticks = max(1, math.ceil(high / step))
    peak = step * ticks
    n = max(len(days), 1)
    x_of = (lambda i: left + inner_w / 2) if n == 1 else (lambda i: left + inner_w * i / (n - 1))
    body = []
    for k in range(ticks + 1):
        y = top + inner_h - inner_h * k / ticks
        shown = f"{100 * step * k:.0f}%" if percent else _fmt(round(step * k, 2))
        body.append(
            f"<line x1='{left}' x2='{width - 20}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e2e8f0'/>"
        )
        body.append(_text(left - 6, y + 4, shown, "end", "font-size='11'"))
    for s_i, name in enumerate(names):
        colour = PALETTE[s_i % len(PALETTE)]
        body.append(f"<rect x='{left + 220 * s_i}' y='6' width='12' height='12' fill='{colour}'/>")
        body.append(_text(left + 220 * s_i + 18, 16, name))
    for s_i, values_i in enumerate(series):
        colour = PALETTE[s_i % len(PALETTE)]
        points = []
        for i, v in enumerate(values_i):
            if v is None:
                continue
            cx, cy = x_of(i), top + inner_h - inner_h * v / peak
            points.append(f"{cx:.1f},{cy:.1f}")
            shown = f"{100 * v:.1f}%" if percent else _fmt(v)
            body.append(
                f"<circle class='point' cx='{cx:.1f}' cy='{cy:.1f}' r='3' fill='{colour}'>"
                f"<title>{escape(days[i])}: {escape(names[s_i])} {shown}</title></circle>"
            )
        if len(points) > 1:
            body.append(
                f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                f"points='{' '.join(points)}'/>"
            )
    every = max(1, math.ceil(n / 6))
    for i in range(0, n, every):
        body.append(_text(x_of(i), top + inner_h + 18, days[i], "middle", "font-size='11'"))
    return _svg(width, height, title, body, "trend")


def sparkline(values: Sequence[float | None], *, title: str, width: int = 120) -> str:
    """A small line of values (``None`` skipped) without axes, for a table cell."""
    height = 28
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    n = len(values)
    points = [
        f"{(width - 4) * (i / (n - 1) if n > 1 else 0.5) + 2:.1f},"
        f"{height - 3 - (height - 6) * ((v - low) / span if high > low else 0.5):.1f}"
        for i, v in enumerate(values)
        if v is not None
    ]
    body = [
        f"<polyline fill='none' stroke='{PALETTE[0]}' stroke-width='1.5' "
        f"points='{' '.join(points)}'/>",
        f"<circle cx='{points[-1].split(',')[0]}' cy='{points[-1].split(',')[1]}' r='2' "
        f"fill='{PALETTE[0]}'/>",
    ]
    return _svg(width, height, title, body, "sparkline")
