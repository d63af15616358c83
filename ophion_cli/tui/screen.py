"""What every screen of the terminal UI shares: the title line, the footer and the status bar,
and answers asked for on a worker thread (``fetch``) and shown on the UI thread (``show``),
again every ``REFRESH`` times the app's refresh interval while the screen is the one shown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Label, Static
from textual.widgets.data_table import RowKey

from ophiond.errors import OphionError

if TYPE_CHECKING:
    from ophion_cli.tui.app import OphionTui

SIGNALS = ("traces", "logs", "metrics")
_UNITS = {"traces": "spans", "logs": "logs", "metrics": "points"}


class StatusBar(Static):
    """Daemon connection, ingest rates and the time window, on one line."""

    DEFAULT_CSS = "StatusBar { dock: bottom; height: 1; background: $panel; padding: 0 1; }"

    def show(self, app: OphionTui) -> None:
        text = Text()
        if app.daemon_error is None:
            text.append("● ", style="green")
            text.append(f"ophiond {app.daemon_version}", style="bold")
            rates = "  ".join(
                f"{app.ingest_rates[s]:,.0f} {_UNITS[s]}/s"
                for s in SIGNALS
                if s in app.ingest_rates
            )
            if rates:
                text.append(f" │ {rates}")
        elif app.daemon_refused:
            text.append("● ", style="yellow")
            text.append(f"ophiond refuses: {app.daemon_error}", style="bold yellow")
        else:
            text.append("● ", style="red")
            text.append(f"daemon down: {app.daemon_error} (retrying)", style="bold red")
        text.append(f" │ window {app.window}")
        text.append(" │ ? help", style="dim")
        self.update(text)


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


class TuiScreen(Screen[None]):
    """A screen of ``ophion tui``: its title line, ``body()``, the footer and the status bar.

    It asks the daemon when it is shown (first and on coming back) and, when ``REFRESH`` is
    set, every ``REFRESH`` x the app's ``refresh_s`` while it is shown; ``r`` asks at once.
    """

    REFRESH: float | None = 1.0

    @property
    def tui(self) -> OphionTui:
        return cast("OphionTui", self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield from self.body()
        yield Footer()
        yield StatusBar()

    def body(self) -> Iterable[Widget]:
        yield Table(cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self._asked = False
        self.prepare()
        self._timer = (
            self.set_interval(self.tui.refresh_s * self.REFRESH, self.load, pause=True)
            if self.REFRESH
            else None
        )

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        """Shown (the first time, or again): ask now, then on the timer; a screen without a
        timer asks only the first time (coming back from help keeps its state)."""
        self.query_one(StatusBar).show(self.tui)
        if self._timer is not None:
            self._timer.resume()
        elif self._asked:
            return
        self._asked = True
        self.load()

    def prepare(self) -> None:
        """Set up the widgets once mounted (columns, and so on)."""

    def fetch(self) -> Any:
        """Ask the daemon (on a worker thread); ``None``: nothing to ask."""
        return None

    def show(self, answer: Any) -> None:
        """Show an answer of :meth:`fetch` (on the UI thread)."""

    def window_ns(self) -> int | None:
        """The time window's length; ``None`` when it is a start time (ISO), not a length."""
        from ophiond.timespec import TimeSpecError, parse_duration_ns

        try:
            return parse_duration_ns(self.tui.window)
        except TimeSpecError:
            return None

    def set_title(self, *parts: str | Text | tuple[str, str]) -> None:
        self.query_one("#title", Static).update(Text.assemble(*parts))

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        try:
            answer = self.fetch()
        except OphionError as e:
            self.app.call_from_thread(self.tui.query_failed, e)
            return
        if answer is not None:
            self.app.call_from_thread(self.show, answer)


class DataScreen(TuiScreen):
    """A screen whose body is one table (``setup`` makes its columns)."""

    def prepare(self) -> None:
        self.setup(self.query_one(DataTable))

    def setup(self, table: DataTable[Any]) -> None:
        raise NotImplementedError

    def put_rows(self, rows: dict[str, tuple[Any, ...]]) -> None:
        put_rows(self.query_one(DataTable), rows)


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


Answer = TypeVar("Answer")


class Dialog(ModalScreen[Answer | None]):
    """A question over the current screen; Escape leaves it unanswered (``None``)."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormScreen(Dialog[Answer]):
    """A small form: ``HEADING``, the ``fields()``, and a line for what is wrong with them.
    Enter in a field submits it (``submit``)."""

    HEADING = ""
    DEFAULT_CSS = """
    FormScreen { align: center middle; }
    FormScreen > Vertical { width: 64; height: auto; border: round $accent; padding: 0 1;
                            background: $surface; }
    FormScreen Input { margin-bottom: 0; }
    FormScreen #problem { color: $error; height: auto; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.HEADING} (Enter applies, Escape cancels)")
            yield from self.fields()
            yield Static(id="problem")

    def fields(self) -> Iterable[Widget]:
        raise NotImplementedError

    def on_input_submitted(self) -> None:
        answer = self.submit({i.id: i.value.strip() for i in self.query(Input) if i.id})
        if answer is not None:
            self.dismiss(answer)

    def submit(self, values: dict[str, str]) -> Answer | None:
        """The answer the fields make, or ``None`` after saying (``problem``) what is wrong."""
        raise NotImplementedError

    def problem(self, text: str) -> None:
        self.query_one("#problem", Static).update(text)
