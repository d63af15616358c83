"""The UI's tables: a ``DataTable`` that repaints rows drawn before their columns were measured,
how a screen puts its rows in one, and a log record's row (the logs and trace screens show
records alike)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from ophion_cli.output.views import clock_time, severity


class Table(DataTable[Any]):
    """The UI's tables: a ``DataTable`` that never keeps showing a row cut to its columns' old
    widths.

    Textual measures the columns when the table is next idle, after rows are added or cells
    updated, and caches each row as drawn until its update counter moves; the measuring does
    not move it (textual#4470, still so in 8.2.8). On a busy machine the screen can be drawn
    before that idle moment (the first row is drawn at once, to show the cursor on it): that
    row then stays cut to the header's widths, even after the next full repaint. So the
    counter moves here whenever the measuring changed a width.
    """

    _measured_widths: tuple[int, ...] = ()

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # (Textual's private hook: it runs once the columns are measured, for added rows and
        # updated cells alike; the textual pin and a test in tests/test_tui.py watch it.)
        super()._update_dimensions(new_rows)
        widths = tuple(column.get_render_width(self) for column in self.columns.values())
        if widths != self._measured_widths:
            self._measured_widths = widths
            self._update_count += 1  # (every render cache is keyed by it)
            self.refresh()


def put_rows(table: DataTable[Any], rows: dict[str, tuple[Any, ...]]) -> None:
    """Make ``table`` hold exactly ``rows`` (by key, in that order) with the cursor on the row
    it was on, wherever that row is now: rows are updated in place while the order holds,
    else the table is rebuilt and the cursor put back on its row."""
    current = None
    if table.row_count:
        current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    if [key.value for key in table.rows] == list(rows):
        for key, cells in rows.items():
            for column, cell in zip(list(table.columns), cells, strict=True):
                table.update_cell(key, column, cell, update_width=True)
        return
    scroll_y, old_row = table.scroll_y, table.cursor_row
    if table.row_count:
        table.clear()
    for key, cells in rows.items():
        table.add_row(*cells, key=key)
    if current in rows:
        # The row keeps its place on the screen: rows that came above it scroll the view.
        row = table.get_row_index(current)
        table.move_cursor(row=row, scroll=False)
        table.scroll_to(y=max(0, scroll_y + row - old_row), animate=False)


def record_cells(
    record: dict[str, Any], palette: dict[str, str], search: str = ""
) -> tuple[Any, ...]:
    """A log record as a table row: time, severity in its colour, service, body (``search``
    highlighted); the logs and trace screens list records the same way."""
    body = Text((record.get("body") or "").replace("\n", " ⏎ "))
    if search:
        body.highlight_words([search], style="reverse", case_sensitive=False)
    service = record.get("service") or ""
    return (
        clock_time(record.get("time")),
        Text(*severity(record.get("severity_number"), record.get("severity"))),
        Text(service, style=palette.get(service, "")),
        body,
    )
