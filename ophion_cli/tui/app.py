"""The terminal UI: an app with a status bar and a stack of screens over the daemon's API.

No question to the daemon runs on the UI thread: every screen asks from a thread worker and
hands the answer back with ``call_from_thread``. The status bar polls ``/status``: it shows
whether the daemon answers and how fast records are stored; when the daemon is down the
screens keep what they showed and the app keeps asking until it is back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App
from textual.binding import Binding

from ophion_cli.tui.host import SIGNALS, WINDOWS, Host
from ophion_cli.tui.screens.base import TuiScreen
from ophion_cli.tui.screens.help import HelpScreen
from ophion_cli.tui.screens.logs import LogFilters, LogsScreen
from ophion_cli.tui.screens.metrics import MetricsScreen
from ophion_cli.tui.screens.service_map import MapScreen
from ophion_cli.tui.screens.services import ServicesScreen
from ophion_cli.tui.screens.trace import TraceScreen
from ophion_cli.tui.screens.traces import TracesScreen
from ophion_cli.tui.source import Source
from ophion_cli.tui.widgets.status_bar import StatusBar
from ophiond.errors import DaemonNotRunning, OphionError


class OphionTui(App[None]):
    """``ophion tui``."""

    TITLE = "ophion"
    CSS = """
    DataTable { height: 1fr; }
    #title { height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS = [
        Binding("q", "go_back", "back/quit"),
        Binding("question_mark", "help", "help"),
        Binding("w", "window(1)", "window"),
        Binding("W", "window(-1)", "window", show=False),
        Binding("r", "refresh", "refresh"),
        Binding("1", "section('services')", "services", show=False),
        Binding("2", "section('traces')", "traces", show=False),
        Binding("3", "section('logs')", "logs", show=False),
        Binding("4", "section('metrics')", "metrics", show=False),
        Binding("5", "section('map')", "map", show=False),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: Source,
        since: str = "15m",
        refresh_s: float = 5.0,
        status_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.source = source
        self.window = since
        self.refresh_s = refresh_s
        self.status_s = status_s
        self.daemon_error: str | None = None
        self.daemon_refused = False  # it answers, but not to us (a token it does not take)
        self.daemon_version = ""
        self.ingest_rates: dict[str, float] = {}
        self._last_stored: tuple[float, dict[str, int]] | None = None

    def on_mount(self) -> None:
        self.push_screen(ServicesScreen())
        self.poll_status()
        self.set_interval(self.status_s, self.poll_status)

    # -- the daemon's status -------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="status", exit_on_error=False)
    def poll_status(self) -> None:
        try:
            status = self.source.status()
        except OphionError as e:
            self.call_from_thread(self._daemon_down, e)
            return
        self.call_from_thread(self._daemon_up, status)

    def _daemon_up(self, status: dict[str, Any]) -> None:
        was_down = self.daemon_error is not None
        self.daemon_error = None
        self.daemon_version = str(status.get("version", ""))
        now = time.monotonic()
        stored = {s: int(status["signals"][s]["accepted"]) for s in SIGNALS}
        if self._last_stored is not None and now > self._last_stored[0]:
            then, before = self._last_stored
            self.ingest_rates = {s: max(0, stored[s] - before[s]) / (now - then) for s in SIGNALS}
        self._last_stored = (now, stored)
        self._show_status()
        if was_down:
            self.action_refresh()

    def _daemon_down(self, error: OphionError) -> None:
        self.daemon_refused = not isinstance(error, DaemonNotRunning)
        self.daemon_error = error.message + (
            f" ({error.hint})" if self.daemon_refused and error.hint else ""
        )
        self.ingest_rates = {}
        self._last_stored = None
        self._show_status()

    def _show_status(self) -> None:
        for bar in self.screen.query(StatusBar):
            bar.show(self)

    def query_failed(self, error: OphionError) -> None:
        """A screen's question failed: a down daemon shows in the status bar, the rest here."""
        if isinstance(error, DaemonNotRunning):
            self._daemon_down(error)
        else:
            self.notify(f"{error.message}\n{error.hint or ''}".strip(), severity="error")

    # -- where the screens go (``Host``) -------------------------------------------------------

    def open_traces(self, service: str | None = None) -> None:
        self.push_screen(TracesScreen(service=service))

    def open_trace(self, trace_id: str) -> None:
        self.push_screen(TraceScreen(trace_id))

    def open_logs(self, service: str = "") -> None:
        self.push_screen(LogsScreen(LogFilters(service=service)))

    # -- actions -------------------------------------------------------------------------------

    def action_go_back(self) -> None:
        if len(self.screen_stack) > 2:  # (the default screen, then ours)
            self.pop_screen()
        else:
            self.exit()

    def action_section(self, name: str) -> None:
        """To the first screen of a section, from wherever the user is."""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if name == "traces":
            self.push_screen(TracesScreen())
        elif name == "logs":
            self.push_screen(LogsScreen())
        elif name == "metrics":
            self.push_screen(MetricsScreen())
        elif name == "map":
            self.push_screen(MapScreen())

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_window(self, step: int) -> None:
        i = WINDOWS.index(self.window) if self.window in WINDOWS else 0
        self.window = WINDOWS[(i + step) % len(WINDOWS)]
        self._show_status()
        self.action_refresh()

    def action_refresh(self) -> None:
        screen = self.screen
        if isinstance(screen, TuiScreen):
            screen.load()


if TYPE_CHECKING:
    # The screens reach the app only as a ``Host`` (a cast): mypy checks here that it is one.
    def _the_app_is_a_host(app: OphionTui) -> Host:
        return app
