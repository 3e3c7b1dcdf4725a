"""Line charts drawn with Braille characters (2x4 dots per cell), so the dashboard needs no plotting library.

Long series are bucketed per dot column: the raw series is drawn as the min..max span of each bucket (noise
stays visible as a band), the smoothed one as a connected line through the bucket means.
"""

from __future__ import annotations

import math
from typing import Sequence

from rich.text import Text

# Bit of each dot inside a Braille cell, by (column, row).
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
LABEL_WIDTH = 9


def _columns(values: Sequence[float], width: int) -> list[tuple[float, float, float] | None]:
    """(min, max, mean) of the finite values falling in each of `width` dot columns."""
    n = len(values)
    out: list[tuple[float, float, float] | None] = [None] * width
    if n == 0:
        return out
    if n <= width:
        for i, value in enumerate(values):
            if math.isfinite(value):
                col = round(i * (width - 1) / (n - 1)) if n > 1 else 0
                out[col] = (value, value, value)
        return out
    per = n / width
    for col in range(width):
        bucket = [v for v in values[int(col * per): int((col + 1) * per) or 1] if math.isfinite(v)]
        if bucket:
            out[col] = (min(bucket), max(bucket), sum(bucket) / len(bucket))
    return out


def _interpolated(cols: list[tuple[float, float, float] | None]) -> list[tuple[float, float, float] | None]:
    """Fill the empty columns between points (short series) so the smoothed line reads as a line."""
    known = [i for i, c in enumerate(cols) if c is not None]
    out = list(cols)
    for a, b in zip(known, known[1:]):
        ya, yb = cols[a][2], cols[b][2]  # type: ignore[index]
        for i in range(a + 1, b):
            y = ya + (yb - ya) * (i - a) / (b - a)
            out[i] = (y, y, y)
    return out


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def braille_chart(raw: Sequence[float], smoothed: Sequence[float] | None, width: int, height: int,
                  raw_style: str = "grey50", smooth_style: str = "bold cyan") -> Text:
    """A `width` x `height` cell chart (plus a y-axis label column) of raw and smoothed values."""
    plot_w = max(4, width - LABEL_WIDTH)
    dots_x, dots_y = plot_w * 2, max(1, height) * 4
    raw_cols = _columns(raw, dots_x)
    smooth_cols = _interpolated(_columns(smoothed, dots_x)) if smoothed is not None else [None] * dots_x
    finite = [c for c in raw_cols if c is not None] + [c for c in smooth_cols if c is not None]
    text = Text(no_wrap=True, overflow="crop")
    if not finite:
        text.append(" " * LABEL_WIDTH + "(no finite values yet)", style="dim")
        return text
    lo = min(c[0] for c in finite)
    hi = max(c[1] for c in finite)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * 0.01, hi + 0.5 * (abs(hi) or 1) * 0.01

    def row_of(value: float) -> int:
        return min(dots_y - 1, max(0, round((hi - value) / (hi - lo) * (dots_y - 1))))

    raw_bits = [[0] * plot_w for _ in range(height)]
    smooth_bits = [[0] * plot_w for _ in range(height)]
    for x, col in enumerate(raw_cols):
        if col is None:
            continue
        for y in range(row_of(col[1]), row_of(col[0]) + 1):
            raw_bits[y // 4][x // 2] |= _DOTS[x % 2][y % 4]
    previous: int | None = None
    for x, col in enumerate(smooth_cols):
        if col is None:
            continue
        y = row_of(col[2])
        top, bottom = (y, y) if previous is None else (min(y, previous), max(y, previous))
        # join to the previous point so the line stays connected when it moves more than one dot
        for yy in range(top, bottom + 1):
            smooth_bits[yy // 4][x // 2] |= _DOTS[x % 2][yy % 4]
        previous = y
    for row in range(height):
        label = _fmt(hi) if row == 0 else _fmt(lo) if row == height - 1 else ""
        text.append(label.rjust(LABEL_WIDTH - 1) + ("┤" if label else "│"), style="dim")
        for cell in range(plot_w):
            s_bits, r_bits = smooth_bits[row][cell], raw_bits[row][cell]
            bits = s_bits | r_bits
            char = chr(0x2800 + bits) if bits else " "
            text.append(char, style=smooth_style if s_bits else raw_style if r_bits else "")
        if row < height - 1:
            text.append("\n")
    return text
