"""Line charts drawn with Braille characters (2x4 dots per cell) for the dashboard.

Kept instead of a plotting library (plotext draws whole figures to a string of its own and cannot share a Rich
panel's cells with the other panels, nor reuse a drawing between redraws): this renderer draws into a Rich
`Text` that is cached per panel, and only what the charts need.

Points sit at their x (epochs, from the logged iteration), so a log that starts mid-epoch starts mid-axis and a run
stopped early ends early. A train curve is drawn as the min..max band of the raw points in each dot column (noise
stays visible) plus the smoothed line through it; validation metrics are drawn as the measured points only,
never smoothed or joined. The y axis turns logarithmic when asked, or by itself when the positive values span
more than `AUTO_LOG_RATIO`, so a first loss of 227 does not flatten the rest of the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rich.text import Text

# Bit of each dot inside a Braille cell, by (column, row).
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
LABEL_WIDTH = 9
AUTO_LOG_RATIO = 20.0


@dataclass
class Curve:
    values: Sequence[float]
    xs: Sequence[float] | None = None  # None: the logged order
    smoothed: Sequence[float] | None = None
    points: bool = False  # validation: measured points only
    style: str = "bold cyan"
    raw_style: str = "grey50"


def use_log(curves: Sequence[Curve], log_y: bool | None) -> bool:
    finite = [v for c in curves for v in c.values if math.isfinite(v)]
    if log_y is not None:
        return log_y and bool(finite) and min(finite) > 0
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > AUTO_LOG_RATIO


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def braille_chart(curves: Sequence[Curve], width: int, height: int, log_y: bool | None = None,
                  x_label: str = "epoch", x_range: tuple[float, float] | None = None) -> Text:
    """A `width` x `height` cell chart (plus a y-axis label column and an x-axis line) of the curves."""
    plot_w = max(4, width - LABEL_WIDTH)
    dots_x, dots_y = plot_w * 2, max(1, height) * 4
    text = Text(no_wrap=True, overflow="crop")
    log = use_log(curves, log_y)

    def ty(value: float) -> float | None:
        if not math.isfinite(value) or (log and value <= 0):
            return None
        return math.log10(value) if log else value

    by_index = any(c.xs is None for c in curves)
    xs_of = [list(range(len(c.values))) if by_index else list(c.xs) for c in curves]  # type: ignore[arg-type]
    all_x = [x for xs in xs_of for x in xs]
    ys = [y for c in curves for y in map(ty, c.values) if y is not None]
    ys += [y for c in curves if c.smoothed is not None for y in map(ty, c.smoothed) if y is not None]
    if not all_x or not ys:
        text.append(" " * LABEL_WIDTH + "(no finite values yet)", style="dim")
        return text
    x0, x1 = min(all_x), max(all_x)
    if x_range is not None and not by_index:  # the run's other charts span this: same x, one above the other
        x0, x1 = min(x0, x_range[0]), max(x1, x_range[1])
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * 0.01, hi + 0.5 * (abs(hi) or 1) * 0.01

    def col_of(x: float) -> int:
        return min(dots_x - 1, max(0, round((x - x0) / (x1 - x0) * (dots_x - 1))))

    def row_of(y: float) -> int:
        return min(dots_y - 1, max(0, round((hi - y) / (hi - lo) * (dots_y - 1))))

    bits = [[0] * plot_w for _ in range(height)]
    styles: list[list[str | None]] = [[None] * plot_w for _ in range(height)]

    def dot(x: int, y: int, style: str, strong: bool) -> None:
        cell_row, cell = y // 4, x // 2
        bits[cell_row][cell] |= _DOTS[x % 2][y % 4]
        if strong or styles[cell_row][cell] is None:
            styles[cell_row][cell] = style

    for curve, xs in zip(curves, xs_of):
        # raw band per dot column (train) or the measured points (validation)
        spans: dict[int, tuple[float, float]] = {}
        for x, value in zip(xs, curve.values):
            y = ty(value)
            if y is None:
                continue
            c = col_of(x)
            a, b = spans.get(c, (y, y))
            spans[c] = (min(a, y), max(b, y))
        for c, (a, b) in spans.items():
            for r in range(row_of(b), row_of(a) + 1):
                dot(c, r, curve.style if curve.points else curve.raw_style, curve.points)
                if curve.points:  # a measured point as both dots of its cell row: visible, still not a line
                    dot(c ^ 1, r, curve.style, True)
        if curve.points or curve.smoothed is None:
            continue
        means: dict[int, list[float]] = {}
        for x, value in zip(xs, curve.smoothed):
            y = ty(value)
            if y is not None:
                means.setdefault(col_of(x), []).append(y)
        previous: tuple[int, float] | None = None
        for c in sorted(means):
            y = sum(means[c]) / len(means[c])
            if previous is not None:  # fill the dot columns between two points: the line reads as a line
                pc, py = previous
                for cc in range(pc + 1, c):
                    dot(cc, row_of(py + (y - py) * (cc - pc) / (c - pc)), curve.style, True)
            r = row_of(y)
            # join to the previous point so the line stays connected when it moves more than one dot
            prev_r = row_of(previous[1] + (y - previous[1]) * (c - 1 - previous[0]) / (c - previous[0])) \
                if previous is not None and c - 1 > previous[0] else (row_of(previous[1]) if previous else r)
            for rr in range(min(r, prev_r), max(r, prev_r) + 1):
                dot(c, rr, curve.style, True)
            previous = (c, y)
    back = (lambda y: 10**y) if log else (lambda y: y)
    for row in range(height):
        label = _fmt(back(hi)) if row == 0 else _fmt(back(lo)) if row == height - 1 else ("log" if log and
                                                                                           row == 1 else "")
        text.append(label.rjust(LABEL_WIDTH - 1) + ("┤" if label and label != "log" else "│"), style="dim")
        for cell in range(plot_w):
            b = bits[row][cell]
            text.append(chr(0x2800 + b) if b else " ", style=styles[row][cell] or "")
        text.append("\n")
    left = f"{x0:.4g}" if not by_index else "1"
    right = f"{x1:.4g}" if not by_index else str(int(x1) + 1)
    name = x_label if not by_index else "logged step"
    axis = left + name.center(max(1, plot_w - len(left) - len(right))) + right
    text.append(" " * LABEL_WIDTH + axis[:plot_w], style="dim")
    return text
