"""The services: each one's request rate and its trend, error rate and latency over the window;
Enter opens its traces, ``l`` its logs."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from ophion_cli.output.views import clock_time, human_ns, service_colors, sparkline
from ophion_cli.tui.screens.base import DataScreen

# Steps of the services' rate sparklines across the window.
_TREND_STEPS = 24


class ServicesScreen(DataScreen):
    """Each service's request rate, error rate and latency; Enter opens its traces."""

    BINDINGS = [Binding("l", "logs", "logs")]

    def action_logs(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            service = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            self.tui.open_logs(service or "")

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
        self.tui.open_traces(event.row_key.value or None)
