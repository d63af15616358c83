"""What every screen of the terminal UI shares: the title line, the footer and the status bar,
and answers asked for on a worker thread (``fetch``) and shown on the UI thread (``show``),
again every ``REFRESH`` times the app's refresh interval while the screen is the one shown;
and the dialogs (``Dialog``, ``FormScreen``) the screens open over themselves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Label, Static

from ophion_cli.tui.host import Host
from ophion_cli.tui.widgets.status_bar import StatusBar
from ophion_cli.tui.widgets.table import Table, put_rows
from ophiond.errors import OphionError


class TuiScreen(Screen[None]):
    """A screen of ``ophion tui``: its title line, ``body()``, the footer and the status bar.

    It asks the daemon when it is shown (first and on coming back) and, when ``REFRESH`` is
    set, every ``REFRESH`` x the app's ``refresh_s`` while it is shown; ``r`` asks at once.
    """

    REFRESH: float | None = 1.0

    @property
    def tui(self) -> Host:
        """The app, as far as a screen needs it (the app checks it is a ``Host``)."""
        return cast("Host", self.app)

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
        from ophiond.errors import TimeSpecError
        from ophiond.timespec import parse_duration_ns

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
