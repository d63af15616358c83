"""Metrics: the list, then one metric charted over the window for the chosen series (rates and
values as lines; histograms and summaries as p50, p95 and p99)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, SelectionList, Static

from ophion_cli.output.views import clock_time, format_value, service_colors
from ophion_cli.tui.screens.base import DataScreen, TuiScreen
from ophion_cli.tui.widgets.chart import Line, render

_QUANTILE_STYLES = (("p50", "green"), ("p95", "yellow"), ("p99", "red"))
# Points across the chart: about two per cell of a wide terminal.
_STEPS = 120


def _seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def series_name(series: dict[str, Any]) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(series["attributes"].items()))
    return (
        f"{series['service'] or '(no service)'} {{{labels}}}"
        if labels
        else (series["service"] or "(no service)")
    )


def chart_lines(doc: dict[str, Any], chosen: list[int]) -> list[Line]:
    """The lines to draw for the chosen series of a metric document."""
    colors = service_colors([s["service"] or "" for s in doc["series"]])
    lines = []
    for i in chosen:
        series = doc["series"][i]
        times = [_seconds(p["time"]) for p in series["points"]]
        if series["kind"] == "quantiles":
            for key, style in _QUANTILE_STYLES:
                points = [(t, p.get(key)) for t, p in zip(times, series["points"], strict=True)]
                lines.append(Line(f"{key} {series_name(series)}", points, style))
        else:
            points = [(t, p["value"]) for t, p in zip(times, series["points"], strict=True)]
            lines.append(Line(series_name(series), points, colors.get(series["service"] or "", "")))
    return lines


class MetricsScreen(DataScreen):
    """The metrics seen in the window; Enter charts one."""

    REFRESH = 2.0

    def setup(self, table: DataTable[Any]) -> None:
        for label in ("metric", "type", "unit", "series", "services", "last seen"):
            table.add_column(label, key=label)

    def fetch(self) -> dict[str, Any]:
        return self.tui.source.metrics(self.tui.window)

    def show(self, doc: dict[str, Any]) -> None:
        metrics = doc["metrics"]
        self.set_title(("Metrics", "bold"), f"  last {self.tui.window}, {len(metrics)} metrics")
        self.put_rows(
            {
                m["name"]: (
                    m["name"],
                    m["type"],
                    m["unit"] or "",
                    Text(str(m["series"]), justify="right"),
                    ", ".join(m["services"]),
                    clock_time(m.get("last_seen"))[:8],
                )
                for m in metrics
            }
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.push_screen(MetricScreen(event.row_key.value))


class _Chart(Static):
    """The chart's place: drawn again whenever its size changes (the chart fills it)."""

    def on_resize(self) -> None:
        screen = self.screen
        if isinstance(screen, MetricScreen):
            screen.draw()


class MetricScreen(TuiScreen):
    """One metric over the window: pick series on the left, the chart on the right."""

    BINDINGS = [Binding("s", "series", "series")]
    REFRESH = 2.0
    CSS = """
    MetricScreen #body { height: 1fr; }
    MetricScreen SelectionList { width: 36; height: 1fr; }
    MetricScreen #chart-pane { width: 1fr; height: 1fr; }
    MetricScreen #chart { height: 1fr; }
    MetricScreen #legend { height: auto; max-height: 4; }
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.metric = name
        self.doc: dict[str, Any] | None = None

    def body(self) -> Iterable[Widget]:
        yield Horizontal(
            SelectionList[int](id="series"),
            Vertical(_Chart(id="chart"), Static(id="legend"), id="chart-pane"),
            id="body",
        )

    def fetch(self) -> dict[str, Any]:
        step_s = max(1, (self.window_ns() or 3600 * 10**9) // 10**9 // _STEPS)
        return self.tui.source.metric(self.metric, {"since": self.tui.window, "step": f"{step_s}s"})

    def show(self, doc: dict[str, Any]) -> None:
        first = self.doc is None
        self.doc = doc
        self.set_title(
            (self.metric, "bold"),
            f"  {doc['type']}",
            f"  {doc['unit']}" if doc["unit"] else "",
            f"  last {self.tui.window}, {len(doc['series'])} series",
        )
        chooser = self.query_one(SelectionList)
        chosen = set(chooser.selected)
        chooser.clear_options()
        chooser.add_options(
            (series_name(s), i, (i in chosen) if not first else i < 3)
            for i, s in enumerate(doc["series"])
        )
        self.draw()

    def on_selection_list_selected_changed(self) -> None:
        self.draw()

    def draw(self) -> None:
        if self.doc is None:
            return
        chart = self.query_one("#chart", Static)
        chosen = sorted(self.query_one(SelectionList).selected)
        lines = chart_lines(self.doc, chosen)
        if not lines:
            chart.update(Text("choose a series on the left (space)", style="dim"))
            self.query_one("#legend", Static).update("")
            return
        times = [x for line in lines for x, y in line.points if y is not None]
        first, last = (min(times), max(times)) if times else (0.0, 0.0)
        unit = self.doc["unit"]
        suffix = "/s" if any(self.doc["series"][i]["kind"] == "rate" for i in chosen) else ""
        width, height = chart.size.width or 60, chart.size.height or 12
        chart.update(
            render(
                lines,
                width,
                height,
                lambda v: format_value(v, unit) + suffix,
                (
                    dt.datetime.fromtimestamp(first, dt.UTC).strftime("%H:%M:%S"),
                    dt.datetime.fromtimestamp(last, dt.UTC).strftime("%H:%M:%S"),
                ),
            )
        )
        legend = Text()
        for line in lines:
            legend.append("━━ ", style=line.style)
            last_value = next((y for _, y in reversed(line.points) if y is not None), None)
            legend.append(line.label)
            if last_value is not None:
                legend.append(f"  {format_value(last_value, unit)}{suffix}", style="bold")
            legend.append("\n")
        self.query_one("#legend", Static).update(legend)

    def action_series(self) -> None:
        self.query_one(SelectionList).focus()
