"""A line chart drawn with braille characters: each cell holds 2 x 4 dots, so a chart of W x H
cells has 2W x 4H points of resolution. Pure text (Rich), so it reads over SSH."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text

_BRAILLE = 0x2800
# The dot bit of each (column, row) in a cell, rows from the top.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


@dataclass
class Line:
    """One series: its points as (x, y), x in any increasing unit (time), y its value."""

    label: str
    points: Sequence[tuple[float, float | None]]
    style: str


def _segment(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The dots on the straight line between two dots (Bresenham)."""
    dots = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    error = dx + dy
    while True:
        dots.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return dots
        double = 2 * error
        if double >= dy:
            error += dy
            x0 += sx
        if double <= dx:
            error += dx
            y0 += sy


def render(
    lines: Sequence[Line],
    width: int,
    height: int,
    y_label: Callable[[float], str],
    x_labels: tuple[str, str],
) -> Text:
    """The chart, ``width`` x ``height`` cells including a left axis of y labels and a bottom
    row of x labels (first and last); gaps in a series (``None``) are left open."""
    axis = 9
    cols, rows = max(4, width - axis - 1), max(2, height - 1)
    values = [y for line in lines for _, y in line.points if y is not None]
    xs = [x for line in lines for x, y in line.points if y is not None]
    grid = [[0] * cols for _ in range(rows)]
    owner: list[list[str | None]] = [[None] * cols for _ in range(rows)]
    low = min(values, default=0.0)
    high = max(values, default=1.0)
    if low > 0 and low < high * 0.5:
        low = 0.0  # (rates and latencies read best from zero, unless the values sit far above it)
    span = (high - low) or 1.0
    x_low, x_high = min(xs, default=0.0), max(xs, default=1.0)
    x_span = (x_high - x_low) or 1.0

    def dot(x: float, y: float) -> tuple[int, int]:
        px = round((x - x_low) / x_span * (cols * 2 - 1))
        py = round((high - y) / span * (rows * 4 - 1))
        return px, py

    for line in lines:
        previous = None
        for x, y in line.points:
            if y is None:
                previous = None
                continue
            here = dot(x, y)
            for px, py in _segment(*(previous or here), *here):
                cell_x, cell_y = px // 2, py // 4
                grid[cell_y][cell_x] |= _DOTS[px % 2][py % 4]
                owner[cell_y][cell_x] = line.style
            previous = here
    text = Text()
    for r in range(rows):
        if r == 0:
            label = y_label(high)
        elif r == rows - 1:
            label = y_label(low)
        elif r == rows // 2:
            label = y_label(low + span / 2)
        else:
            label = ""
        text.append(label[:axis].rjust(axis) + "│", style="dim")
        for c in range(cols):
            bits = grid[r][c]
            text.append(chr(_BRAILLE + bits) if bits else " ", style=owner[r][c] or "")
        text.append("\n")
    left, right = x_labels
    text.append(" " * axis + "└" + left + right.rjust(cols - len(left)), style="dim")
    return text
