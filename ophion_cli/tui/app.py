"""The terminal UI: an app with a status bar and a stack of screens over the daemon's API.

No question to the daemon runs on the UI thread: every screen asks from a thread worker and
hands the answer back with ``call_from_thread``. The status bar polls ``/status``: it shows
whether the daemon answers and how fast records are stored; when the daemon is down the
screens keep what they showed and the app keeps asking until it is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static, Switch

from ophion_cli.tui.screen import SIGNALS, DataScreen, FormScreen, StatusBar, TuiScreen
from ophion_cli.tui.source import Source
from ophion_cli.views import clock_time, human_ns, service_colors, sparkline
from ophiond.errors import DaemonNotRunning, OphionError

# Steps of the services' rate sparklines across the window.
_TREND_STEPS = 24
# The windows ``w`` steps through.
WINDOWS = ("5m", "15m", "1h", "6h", "24h")


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

    # -- actions -------------------------------------------------------------------------------

    def action_go_back(self) -> None:
        if len(self.screen_stack) > 2:  # (the default screen, then ours)
            self.pop_screen()
        else:
            self.exit()

    def action_section(self, name: str) -> None:
        """To the first screen of a section, from wherever the user is."""
        from ophion_cli.tui.metrics import MetricsScreen

        while len(self.screen_stack) > 2:
            self.pop_screen()
        if name == "traces":
            self.push_screen(TracesScreen())
        elif name == "logs":
            from ophion_cli.tui.logs import LogsScreen

            self.push_screen(LogsScreen())
        elif name == "metrics":
            self.push_screen(MetricsScreen())
        elif name == "map":
            from ophion_cli.tui.service_map import MapScreen

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


class ServicesScreen(DataScreen):
    """Each service's request rate, error rate and latency; Enter opens its traces."""

    BINDINGS = [Binding("l", "logs", "logs")]

    def action_logs(self) -> None:
        from ophion_cli.tui.logs import LogFilters, LogsScreen

        table = self.query_one(DataTable)
        if table.row_count:
            service = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            self.app.push_screen(LogsScreen(LogFilters(service=service or "")))

    def setup(self, table: DataTable[Any]) -> None:
        for label in ("service", "req/s", "trend", "errors", "p50", "p95", "p99", "spans", "seen"):
            table.add_column(label, key=label)

    def fetch(self) -> dict[str, Any]:
        window_ns = self.window_ns()
        # About _TREND_STEPS steps across the window (an ISO start: no trend).
        step = f"{max(1, -(-window_ns // 10**9 // _TREND_STEPS))}s" if window_ns else None
        return self.tui.source.services(self.tui.window, step)

    def show(self, doc: dict[str, Any]) -> None:
        services = doc["services"]
        colors = service_colors([s["service"] or "" for s in services])
        self.set_title(("Services", "bold"), f"  last {self.tui.window}, {len(services)} services")
        rows = {}
        for s in services:
            rate = s["error_rate"]
            style = "red" if rate > 0.05 else ("yellow" if rate else "")
            rows[s["service"] or ""] = (
                Text(s["service"] or "(no service)", style=colors.get(s["service"] or "", "")),
                Text(f"{s['request_rate']:.2f}", justify="right"),
                Text(
                    sparkline([point["rate"] for point in s.get("rate_points", [])]),
                    style="red" if rate > 0.05 else "cyan",
                ),
                Text(f"{rate * 100:.1f}%", style=style, justify="right"),
                Text(human_ns(s["p50_ns"]), justify="right"),
                Text(human_ns(s["p95_ns"]), justify="right"),
                Text(human_ns(s["p99_ns"]), justify="right"),
                Text(f"{s['spans']:,}", justify="right"),
                clock_time(s["last_seen"])[:8],
            )
        self.put_rows(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click on the highlighted row): the service's traces."""
        self.app.push_screen(TracesScreen(service=event.row_key.value or None))


@dataclass
class TraceFilters:
    """What the traces screen asks for: traces with a span matching all of these."""

    service: str = ""
    name: str = ""
    min_duration: str = ""  # 250ms, 1.5s
    attribute: str = ""  # KEY=VALUE
    errors_only: bool = False

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "service": self.service or None,
            "name": self.name or None,
            "min_duration": self.min_duration or None,
            "attr": self.attribute or None,
        }
        if self.errors_only:
            params["status"] = "error"
        return {k: v for k, v in params.items() if v is not None}

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.params().items()]
        return ", ".join(parts) if parts else "all"


class TracesScreen(DataScreen):
    """Traces with a span matching the filters, newest (or slowest) first."""

    BINDINGS = [
        Binding("f", "filters", "filter"),
        Binding("slash", "filters", "search", show=False),
        Binding("e", "errors", "errors only"),
        Binding("o", "order", "sort"),
        Binding("c", "clear", "clear filters", show=False),
    ]
    LIMIT = 200

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.filters = TraceFilters(service=service or "")
        self.by_duration = False

    def setup(self, table: DataTable[Any]) -> None:
        for label in ("start", "trace", "root", "duration", "spans", "status", "services"):
            table.add_column(label, key=label)

    def fetch(self) -> dict[str, Any]:
        params = {
            "since": self.tui.window,
            "limit": self.LIMIT,
            "sort": "duration" if self.by_duration else "start",
            **self.filters.params(),
        }
        return self.tui.source.traces(params)

    def show(self, doc: dict[str, Any]) -> None:
        traces = doc["traces"]
        order = "slowest first" if self.by_duration else "newest first"
        self.set_title(
            ("Traces", "bold"),
            f"  {self.filters.describe()}  last {self.tui.window}, {len(traces)} shown, {order}",
        )
        rows = {}
        for t in traces:
            rows[t["trace_id"]] = (
                clock_time(t["start"])[:8],
                t["trace_id"][:16],
                f"{t['root_service'] or '?'}: {t['root_name'] or '?'}",
                Text(human_ns(t["duration_ns"]), justify="right"),
                Text(str(t["spans"]), justify="right"),
                Text("error", style="red") if t["error"] else Text("ok", style="green"),
                ", ".join(t["services"]),
            )
        self.put_rows(rows)

    def action_filters(self) -> None:
        def apply(filters: TraceFilters | None) -> None:
            if filters is not None:
                self.filters = filters
                self.load()

        self.app.push_screen(FilterScreen(self.filters), apply)

    def action_errors(self) -> None:
        self.filters = replace(self.filters, errors_only=not self.filters.errors_only)
        self.load()

    def action_order(self) -> None:
        self.by_duration = not self.by_duration
        self.load()

    def action_clear(self) -> None:
        self.filters = TraceFilters()
        self.load()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click on the highlighted row): the trace's waterfall."""
        from ophion_cli.tui.trace import TraceScreen

        if event.row_key.value:
            self.app.push_screen(TraceScreen(event.row_key.value))


class FilterScreen(FormScreen[TraceFilters]):
    """The traces screen's filters; Enter applies them, Escape leaves them as they were."""

    HEADING = "Filter traces"

    def __init__(self, filters: TraceFilters) -> None:
        super().__init__()
        self.filters = filters

    def fields(self) -> Iterable[Widget]:
        f = self.filters
        yield Input(f.service, placeholder="service", id="service")
        yield Input(f.name, placeholder="operation (span name)", id="name")
        yield Input(f.min_duration, placeholder="min duration: 250ms, 1.5s", id="min_duration")
        yield Input(f.attribute, placeholder="attribute: KEY=VALUE", id="attribute")
        yield Horizontal(Switch(f.errors_only, id="errors_only"), Label(" errors only"))

    def submit(self, values: dict[str, str]) -> TraceFilters | None:
        from ophiond.timespec import TimeSpecError, parse_duration_ns

        if values["min_duration"]:
            try:
                parse_duration_ns(values["min_duration"])
            except TimeSpecError as e:
                self.problem(f"min duration: {e.message}")
                return None
        if values["attribute"] and "=" not in values["attribute"]:
            self.problem("attribute: write KEY=VALUE")
            return None
        return TraceFilters(
            service=values["service"],
            name=values["name"],
            min_duration=values["min_duration"],
            attribute=values["attribute"],
            errors_only=self.query_one(Switch).value,
        )


class HelpScreen(ModalScreen[None]):
    """Every key, by screen."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 90%; border: round $accent; padding: 1 2;
                          background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(help_text())


KEYS: list[tuple[str, str, str]] = [
    ("everywhere", "q", "back to the previous screen; quit on the first"),
    ("everywhere", "?", "this help"),
    ("everywhere", "w / W", "next / previous time window (" + ", ".join(WINDOWS) + ")"),
    ("everywhere", "r", "ask the daemon again now"),
    ("everywhere", "1 / 2 / 3 / 4 / 5", "services / all traces / logs / metrics / service map"),
    ("everywhere", "ctrl+c", "quit"),
    ("tables", "↑ ↓ PgUp PgDn Home End", "move; the mouse scrolls and clicks too"),
    ("services", "enter", "the service's traces"),
    ("services", "l", "the service's logs, live"),
    ("traces", "enter", "the trace's waterfall"),
    ("traces", "f or /", "filters: service, operation, min duration, attribute, errors only"),
    ("traces", "e", "errors only, or all again"),
    ("traces", "o", "newest first, or slowest first"),
    ("traces", "c", "clear the filters"),
    ("trace", "↑ ↓", "move between spans; the selected span's details show beside"),
    ("trace", "enter / space", "collapse or expand a span's children"),
    ("trace", "shift+←", "to the parent span"),
    ("trace", "shift+↑ / shift+↓", "to the previous / next sibling span"),
    ("trace", "tab", "to the trace's log records; enter on one moves to its span"),
    ("logs", "space", "pause; again to resume (records keep arriving meanwhile)"),
    ("logs", "f", "filters: service, lowest severity, text in the body"),
    ("logs", "/", "highlight a text; n / N to the next / previous record holding it"),
    ("logs", "G", "back to the newest record, following"),
    ("logs", "enter", "the record's trace"),
    ("metrics", "enter", "chart the metric"),
    ("metric", "s, then space", "choose the series charted (histograms: p50, p95, p99)"),
    ("map", "enter", "on an edge: the traces of the called service"),
    ("map", "tab", "to the drawing, to scroll it with the arrows"),
]


def help_text() -> Text:
    text = Text("Keys\n\n", style="bold")
    width = max(len(key) for _, key, _ in KEYS)
    scope = ""
    for where, key, what in KEYS:
        if where != scope:
            text.append(f"{where}\n", style="bold underline")
            scope = where
        text.append(f"  {key:<{width}}  ", style="bold cyan")
        text.append(f"{what}\n")
    return text
