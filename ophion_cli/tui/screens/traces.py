"""The traces: those with a span matching the filters, newest (or slowest) first, and the form
that sets the filters; Enter opens a trace's waterfall."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Switch

from ophion_cli.output.views import clock_time, human_ns
from ophion_cli.tui.screens.base import DataScreen, FormScreen


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
        if event.row_key.value:
            self.tui.open_trace(event.row_key.value)


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
        from ophiond.errors import TimeSpecError
        from ophiond.timespec import parse_duration_ns

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
