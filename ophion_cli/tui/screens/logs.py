"""The live log tail: the newest records, then each one as the daemon stores it.

A worker thread reads the daemon's log stream (``/logs/stream``) and hands records to the
table in batches; the table keeps the newest ``KEEP`` of them. Paused, records still arrive
and wait; resumed, they are shown. When the daemon goes away the worker asks again every
two seconds from the last record it saw, so nothing shows twice and nothing is skipped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Input
from textual.worker import get_current_worker

from ophion_cli.output.views import service_colors
from ophion_cli.tui.screens.base import Dialog, FormScreen, TuiScreen
from ophion_cli.tui.widgets.table import Table, record_cells
from ophiond.errors import DaemonNotRunning, OphionError

# Rows the table keeps (the oldest go first), and how often arriving records are shown.
KEEP = 2000
_BATCH_S = 0.1
_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record.get("time_ns"), record.get("span_id"), record.get("body"))


@dataclass
class LogFilters:
    service: str = ""
    severity: str = ""  # that level and above
    grep: str = ""  # body contains, any case

    def params(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("service", self.service),
                ("severity", self.severity),
                ("grep", self.grep),
            )
            if v
        }

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.params().items()]
        return ", ".join(parts) if parts else "all"


class LogsScreen(TuiScreen):
    """``ophion logs -f`` in the terminal UI."""

    BINDINGS = [
        Binding("space", "pause", "pause/resume"),
        Binding("f", "filters", "filter"),
        Binding("slash", "search", "search"),
        Binding("n", "next_match(1)", "next match", show=False),
        Binding("N", "next_match(-1)", "previous match", show=False),
        Binding("G", "follow", "follow", show=False),
    ]
    REFRESH = None  # (live: the stream brings each record)
    CSS = "LogsScreen DataTable { height: 1fr; }"

    def __init__(self, filters: LogFilters | None = None) -> None:
        super().__init__()
        self.filters = filters or LogFilters()
        self.records: deque[dict[str, Any]] = deque()  # what the table shows, oldest first
        # Read by the worker and not yet taken, with the tail they belong to (a filter change
        # starts another; a record of the one before may still come in meanwhile).
        self.incoming: deque[tuple[int, dict[str, Any]]] = deque()
        self.tail = 0
        self.waiting: list[dict[str, Any]] = []  # arrived while paused
        self.paused = False
        self.search = ""
        self.stream: Any = None
        self.palette: dict[str, str] = {}
        self._next_row = 0

    def body(self) -> Iterable[Widget]:
        yield Table(cursor_type="row")

    def prepare(self) -> None:
        table = self.query_one(DataTable)
        for label in ("time", "severity", "service", "body"):
            table.add_column(label, key=label)
        self._title()
        self.follow()
        self.set_interval(_BATCH_S, self._take)

    def _take(self) -> None:
        """Show what the worker read since the last time (a flood is shown in batches)."""
        if self.incoming:
            taken = [self.incoming.popleft() for _ in range(len(self.incoming))]
            batch = [record for tail, record in taken if tail == self.tail]
            if batch:
                self.arrived(batch)

    def on_unmount(self) -> None:
        self._stop()

    def _stop(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()  # (unblocks the worker's read at once)
        self.workers.cancel_group(self, "tail")

    def _title(self) -> None:
        text = Text.assemble(
            ("Logs", "bold"), f"  {self.filters.describe()}, since {self.tui.window}, live"
        )
        if self.paused:
            text.append(f"  PAUSED, {len(self.waiting)} new", style="bold yellow")
        if self.search:
            text.append(f"  search: {self.search}", style="bold")
        self.set_title(text)

    # -- the stream ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="tail", exit_on_error=False)
    def follow(self) -> None:
        worker = get_current_worker()
        tail = self.tail
        params = {"since": self.tui.window, "limit": 200, **self.filters.params()}
        seen: deque[tuple[Any, ...]] = deque(maxlen=500)  # (records already shown, on resume)
        while not worker.is_cancelled:
            try:
                self.stream = self.tui.source.open_log_stream(params)
                for record in self.stream:
                    if "skipped" in record:
                        self.app.call_from_thread(
                            self.notify, f"{record['skipped']} records went by too fast to show"
                        )
                        continue
                    if _key(record) in seen:
                        continue
                    seen.append(_key(record))
                    self.incoming.append((tail, record))  # (the UI takes them every _BATCH_S)
                    params["since"] = record.get("time") or params["since"]
                    if worker.is_cancelled:
                        return
            except DaemonNotRunning as e:
                if worker.is_cancelled:
                    return
                self.app.call_from_thread(self.tui.query_failed, e)
            except OphionError as e:  # refused: a filter the daemon does not accept
                self.app.call_from_thread(self.tui.query_failed, e)
                return
            for _ in range(20):  # the stream ended (the daemon stopped): ask again in 2 s
                if worker.is_cancelled:
                    return
                time.sleep(0.1)

    def arrived(self, records: list[dict[str, Any]]) -> None:
        if self.paused:
            self.waiting.extend(records)
            self._title()
            return
        self._show(records)

    def _show(self, records: list[dict[str, Any]]) -> None:
        table = self.query_one(DataTable)
        at_end = not table.row_count or table.cursor_row >= table.row_count - 1
        self.palette = service_colors(
            sorted({*self.palette, *(r.get("service") or "" for r in records)})
        )
        for record in records:
            self.records.append(record)
            table.add_row(*self._cells(record), key=str(self._next_row))
            self._next_row += 1
        excess = len(self.records) - KEEP
        if excess > 0:
            for _ in range(excess):
                self.records.popleft()
                table.remove_row(next(iter(table.rows)))
        if at_end:  # following: stay on the newest record (scrolled once the rows are laid out)
            table.move_cursor(row=table.row_count - 1, scroll=False)
            self.call_after_refresh(table.scroll_end, animate=False)

    def _cells(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return record_cells(record, self.palette, self.search)

    # -- actions -------------------------------------------------------------------------------

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused and self.waiting:
            waiting, self.waiting = self.waiting, []
            self._show(waiting)
        self._title()

    def action_follow(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def action_filters(self) -> None:
        def apply(filters: LogFilters | None) -> None:
            if filters is None:
                return
            self._stop()
            self.tail += 1
            self.filters = filters
            self.records.clear()
            self.incoming.clear()
            self.waiting = []
            self.query_one(DataTable).clear()
            self._title()
            self.follow()

        self.app.push_screen(LogFilterScreen(self.filters), apply)

    def action_search(self) -> None:
        def apply(text: str | None) -> None:
            if text is None:
                return
            self.search = text
            table = self.query_one(DataTable)
            for key, record in zip(list(table.rows), self.records, strict=True):
                table.update_cell(key, "body", self._cells(record)[3])
            self._title()
            if text:
                self.action_next_match(-1)

        self.app.push_screen(SearchScreen(self.search), apply)

    def action_next_match(self, direction: int) -> None:
        """To the next (1) or previous (-1) record whose body holds the search text."""
        if not self.search:
            return
        table = self.query_one(DataTable)
        records = list(self.records)
        needle = self.search.lower()
        start = table.cursor_row
        for step in range(1, len(records) + 1):
            row = (start + direction * step) % len(records)
            if needle in (records[row].get("body") or "").lower():
                table.move_cursor(row=row)
                return
        self.notify(f"no record holds {self.search!r}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a record with a trace id: that trace."""
        row = self.query_one(DataTable).get_row_index(event.row_key)
        record = list(self.records)[row]
        if record.get("trace_id"):
            self.tui.open_trace(record["trace_id"])
        else:
            self.notify("this record belongs to no trace")


class LogFilterScreen(FormScreen[LogFilters]):
    """Which records the tail shows; Enter applies (the tail starts again), Escape cancels."""

    HEADING = "Filter the log tail"

    def __init__(self, filters: LogFilters) -> None:
        super().__init__()
        self.filters = filters

    def fields(self) -> Iterable[Widget]:
        yield Input(self.filters.service, placeholder="service", id="service")
        levels = ", ".join(_LEVELS)
        yield Input(self.filters.severity, placeholder=f"at least: {levels}", id="severity")
        yield Input(self.filters.grep, placeholder="body contains (any case)", id="grep")

    def submit(self, values: dict[str, str]) -> LogFilters | None:
        if values["severity"] and values["severity"].lower() not in _LEVELS:
            self.problem("severity: one of " + ", ".join(_LEVELS))
            return None
        return LogFilters(values["service"], values["severity"].lower(), values["grep"])


class SearchScreen(Dialog[str]):
    """The text to highlight in the tail; n and N then go from match to match."""

    DEFAULT_CSS = """
    SearchScreen { align: center bottom; }
    SearchScreen > Input { width: 64; margin-bottom: 2; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Input(self.text, placeholder="search the records shown (empty: none)")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())
