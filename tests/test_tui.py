"""``ophion tui`` driven with Textual's pilot against a real daemon fed by the OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from conftest import RunningDaemon
from otel_senders import send_shop
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static, Tree

from ophion_cli.tui.app import OphionTui
from ophion_cli.tui.screens.help import HelpScreen
from ophion_cli.tui.screens.services import ServicesScreen
from ophion_cli.tui.screens.trace import TraceScreen
from ophion_cli.tui.screens.traces import FilterScreen, TracesScreen
from ophion_cli.tui.source import ApiSource
from ophion_cli.tui.widgets.status_bar import StatusBar


async def until(pilot: Pilot[None], done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``done()`` holds (its workers answer in their own time)."""
    for _ in range(int(timeout / 0.05)):
        if done():
            return
        await pilot.pause(0.05)
    raise AssertionError("the app did not get there in time")


async def table_of(pilot: Pilot[None], screen: type[Screen[None]], rows: int) -> DataTable[Any]:
    """Wait until the app shows a ``screen`` whose table holds ``rows`` rows; that table."""

    def shown() -> bool:
        current = pilot.app.screen
        return isinstance(current, screen) and current.query_one(DataTable).row_count == rows

    await until(pilot, shown)
    return pilot.app.screen.query_one(DataTable)


def _cells(table: DataTable[object], column: str) -> list[str]:
    return [str(table.get_cell(row, column)) for row in table.rows]


def _app(daemon: RunningDaemon) -> OphionTui:
    return OphionTui(ApiSource(f"unix:{daemon.home / 'state' / 'api.sock'}", None), refresh_s=0.3)


def test_from_a_service_to_its_traces(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)

    async def scenario() -> None:
        app = _app(daemon)
        async with app.run_test(size=(100, 30), notifications=False) as pilot:
            table = await table_of(pilot, ServicesScreen, 3)
            assert sorted(_cells(table, "service")) == ["batch", "checkout", "frontend"]
            row = {c: str(table.get_cell("checkout", c)) for c in ("errors", "trend")}
            assert row["errors"] == "20.0%"
            # 24 steps over the 15 minutes; the ten requests of two minutes ago make one peak.
            trend = row["trend"]
            assert len(trend) == 24 and "█" in trend[-6:]
            assert sum(ch != "▁" for ch in trend) <= 2
            # Enter on checkout: its traces, the failed ones marked.
            table.move_cursor(row=table.get_row_index("checkout"))
            await pilot.press("enter")
            traces = await table_of(pilot, TracesScreen, 10)
            assert {str(k.value) for k in traces.rows} == set(shop.request_ids)
            assert _cells(traces, "status").count("error") == 2
            # Errors only, then also at least 50 ms through the filter form: one trace left.
            await pilot.press("e")
            await until(pilot, lambda: traces.row_count == 2)
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, FilterScreen))
            app.screen.query_one("#min_duration", Input).value = "50ms"
            app.screen.query_one("#min_duration", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: traces.row_count == 1)
            assert [k.value for k in traces.rows] == [shop.request_ids[7]]
            # Enter on it: its waterfall, the checkout span that failed marked.
            traces.focus()
            await pilot.press("enter")
            await until(
                pilot, lambda: isinstance(app.screen, TraceScreen) and bool(app.screen.nodes)
            )
            assert app.screen.trace_id == shop.request_ids[7]
            assert "✗" in "".join(str(n.label) for n in app.screen.nodes.values())
            await pilot.press("q")
            await until(pilot, lambda: app.screen is traces.screen)
            # Cleared, then slowest first: the cursor stays on its trace as rows move.
            await pilot.press("c")
            await until(pilot, lambda: traces.row_count == 14)
            traces.move_cursor(row=traces.get_row_index(shop.request_ids[0]))
            await pilot.press("o")
            await until(pilot, lambda: _cells(traces, "duration")[0] == "4.10 s")
            key = traces.coordinate_to_cell_key(traces.cursor_coordinate).row_key.value
            assert key == shop.request_ids[0]
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.press("escape")
            await pilot.press("q")
        assert app.return_code == 0

    asyncio.run(scenario())


def test_the_app_says_when_the_daemon_is_down_and_reconnects(
    daemon: RunningDaemon, daemon_factory: Callable[..., RunningDaemon]
) -> None:
    async def scenario() -> None:
        app = _app(daemon)
        app.status_s = 0.2
        async with app.run_test(size=(100, 30), notifications=False) as pilot:
            bar = lambda: str(app.screen.query_one(StatusBar).render())  # noqa: E731
            await until(pilot, lambda: "● ophiond" in bar())
            daemon.stop()
            await until(pilot, lambda: "daemon down" in bar())
            daemon_factory(home=daemon.home)
            await until(pilot, lambda: "● ophiond" in bar(), timeout=30)
            await pilot.press("q")

    asyncio.run(scenario())


def test_every_key_in_the_help_screen_is_in_tui_md() -> None:
    from pathlib import Path

    from ophion_cli.tui.screens.help import KEYS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "tui.md").read_text()
    rows = {
        (where.strip(), key.strip().strip("`").replace("` / `", " / "), what.strip())
        for where, key, what in (
            line.strip("|").split("|") for line in doc.splitlines() if line.startswith("| ")
        )
        if where.strip() != "where"
    }
    assert rows == set(KEYS)


def test_a_trace_as_a_waterfall_and_from_a_log_record_to_its_span(daemon: RunningDaemon) -> None:
    from opentelemetry._logs import SeverityNumber
    from otel_senders import KNOWN_TRACE, Record, send_known_trace, send_records, span_hex

    from ophion_cli.tui.screens.trace import TraceScreen

    known = send_known_trace(daemon)
    charge = int(span_hex(known.charge), 16)
    send_records(
        daemon,
        [
            Record(0, "api", SeverityNumber.INFO, "INFO", "order received", KNOWN_TRACE, 0x1),
            Record(1, "api", SeverityNumber.ERROR, "ERROR", "card declined", KNOWN_TRACE, charge),
        ],
        known.start_ns,
    )

    async def scenario() -> None:
        app = _app(daemon)
        async with app.run_test(size=(160, 40), notifications=False) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))
            app.push_screen(TraceScreen(known.trace_id))
            await until(
                pilot,
                lambda: isinstance(app.screen, TraceScreen) and bool(app.screen.nodes),
            )
            screen = app.screen
            assert isinstance(screen, TraceScreen)
            tree = screen.query_one(Tree)
            # The span tree: the root, its three children in start order, the query under cart.
            root = tree.root.children[0]
            assert root.data is not None and root.data["name"] == "GET /order"
            assert [c.data["name"] for c in root.children if c.data] == [
                "load cart",
                "charge card",
                "audit log",
            ]
            assert "█" in str(root.label)  # on the critical path
            assert "▄" in str(screen.nodes[span_hex(known.audit)].label)  # beside it
            # The trace's records; Enter on the error record moves to "charge card".
            logs = screen.query_one(DataTable)
            await until(pilot, lambda: logs.row_count == 2)
            logs.focus()
            logs.move_cursor(row=1)
            await pilot.press("enter")
            await until(pilot, lambda: tree.cursor_node is screen.nodes[span_hex(known.charge)])
            details = str(screen.query_one("#span", Static).render())
            assert "card declined" in details and "gateway.request" in details
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))

    asyncio.run(scenario())


def test_a_histogram_charted_as_p50_p95_p99(daemon: RunningDaemon) -> None:
    from otel_senders import send_shop_metrics
    from textual.widgets import SelectionList

    from ophion_cli.tui.screens.metrics import MetricScreen, MetricsScreen

    send_shop_metrics(daemon)

    async def scenario() -> None:
        app = _app(daemon)
        async with app.run_test(size=(120, 36), notifications=False) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))
            await pilot.press("4")
            table = await table_of(pilot, MetricsScreen, 4)
            assert sorted(str(k.value) for k in table.rows) == [
                "shop.latency",
                "shop.orders",
                "shop.queue.depth",
                "shop.refunds",
            ]
            table.move_cursor(row=table.get_row_index("shop.latency"))
            await pilot.press("enter")
            await until(
                pilot, lambda: isinstance(app.screen, MetricScreen) and app.screen.doc is not None
            )
            screen = app.screen
            assert isinstance(screen, MetricScreen)
            await until(pilot, lambda: "p99" in str(screen.query_one("#legend", Static).render()))
            legend = str(screen.query_one("#legend", Static).render())
            # Two series (/pay and /cart), each drawn as three lines.
            assert legend.count("p50") == legend.count("p95") == legend.count("p99") == 2
            chart = str(screen.query_one("#chart", Static).render())
            assert any("\u2801" <= ch <= "\u28ff" for ch in chart)  # braille dots drawn
            assert "ms" in chart  # the axis in the metric's unit
            # Unchoosing a series leaves its lines out.
            chooser = screen.query_one(SelectionList)
            chooser.deselect(1)
            await until(
                pilot, lambda: str(screen.query_one("#legend", Static).render()).count("p50") == 1
            )
            await pilot.press("1")
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))

    asyncio.run(scenario())


def test_the_service_map_drawn_with_labelled_edges(daemon: RunningDaemon) -> None:
    from ophion_cli.tui.screens.service_map import MapScreen

    send_shop(daemon)

    async def scenario() -> None:
        app = _app(daemon)
        async with app.run_test(size=(120, 30), notifications=False) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))
            await pilot.press("5")
            await table_of(pilot, MapScreen, 1)
            drawing = str(app.screen.query_one("#drawing", Static).render())
            # frontend calls checkout ten times in the 15 minutes, two of them failing.
            assert "frontend ─── 0.01/s 20.0% p95" in drawing and "─▶ checkout" in drawing
            assert "batch" in drawing
            await pilot.press("enter")
            await table_of(pilot, TracesScreen, 10)
            screen = app.screen
            assert isinstance(screen, TracesScreen) and screen.filters.service == "checkout"

    asyncio.run(scenario())


def test_the_live_log_tail_pauses_resumes_and_opens_a_trace(daemon: RunningDaemon) -> None:
    import time

    from opentelemetry._logs import SeverityNumber
    from otel_senders import RECORDS, TRACE_ONE, Record, S, send_records

    from ophion_cli.tui.screens.logs import LogFilterScreen, LogsScreen
    from ophion_cli.tui.screens.trace import TraceScreen

    send_records(daemon, RECORDS, time.time_ns() - 60 * S)

    async def scenario() -> None:
        app = _app(daemon)
        async with app.run_test(size=(120, 30), notifications=False) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServicesScreen))
            await pilot.press("3")
            table = await table_of(pilot, LogsScreen, len(RECORDS))
            screen = app.screen
            assert isinstance(screen, LogsScreen)
            assert _cells(table, "body")[0] == "cache probe"  # oldest first
            # A record stored now shows up at the end, the cursor following it.
            send_records(
                daemon, [Record(0, "api", SeverityNumber.INFO, "INFO", "live one")], time.time_ns()
            )
            await until(pilot, lambda: table.row_count == len(RECORDS) + 1, timeout=15)
            assert (
                _cells(table, "body")[-1] == "live one" and table.cursor_row == table.row_count - 1
            )
            # Paused: the next one waits; resumed: it is shown.
            await pilot.press("space")
            send_records(
                daemon, [Record(0, "api", SeverityNumber.WARN, "WARN", "held back")], time.time_ns()
            )
            await until(pilot, lambda: len(screen.waiting) == 1, timeout=15)
            assert table.row_count == len(RECORDS) + 1
            assert "PAUSED, 1 new" in str(screen.query_one("#title", Static).render())
            await pilot.press("space")
            await until(pilot, lambda: _cells(table, "body")[-1] == "held back")
            # Search: n moves to the record holding the text.
            await pilot.press("slash")
            await pilot.press(*"order 17")
            await pilot.press("enter")
            await until(
                pilot,
                lambda: (
                    _cells(table, "body")[table.cursor_row]
                    in ("order 17 accepted", "payment FAILED for order 17")
                ),
            )
            # Enter on a record of TRACE_ONE opens that trace.
            table.move_cursor(row=_cells(table, "body").index("order 17 accepted"))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TraceScreen))
            assert app.screen.trace_id == format(TRACE_ONE, "032x")
            # Back, then only errors and worse: the tail starts again with those.
            await pilot.press("q")
            await until(pilot, lambda: app.screen is screen)
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, LogFilterScreen))
            app.screen.query_one("#severity", Input).value = "error"
            app.screen.query_one("#severity", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: sorted(_cells(table, "severity")) == ["ERROR", "FATAL"])
        # (quitting with the tail open does not wait for the stream)

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 30


def test_a_token_the_daemon_refuses_is_told_apart_from_a_daemon_that_is_down(
    daemon_factory: Callable[..., RunningDaemon],
) -> None:
    daemon = daemon_factory("--api-listen", "127.0.0.1:0")
    url = f"http://{daemon.listen['api_tcp']}"

    async def scenario() -> None:
        app = OphionTui(ApiSource(url, "not-a-token"), refresh_s=0.3, status_s=0.2)
        async with app.run_test(size=(100, 30), notifications=False) as pilot:
            bar = lambda: str(app.screen.query_one(StatusBar).render())  # noqa: E731
            await until(pilot, lambda: "ophiond refuses" in bar())
            assert "daemon down" not in bar()
            await pilot.press("q")

    asyncio.run(scenario())


def test_a_screen_asks_once_when_shown_and_a_trace_keeps_its_tree_across_help() -> None:
    from tui_fixture import TRACE_ID, FixtureSource

    asked: list[str] = []

    class Counting(FixtureSource):
        def services(self, since: str, step: str | None = None) -> dict[str, Any]:
            asked.append("services")
            return super().services(since, step)

        def trace(self, trace_id: str) -> dict[str, Any]:
            asked.append("trace")
            return super().trace(trace_id)

    async def scenario() -> None:
        app = OphionTui(Counting(), refresh_s=3600, status_s=3600)
        async with app.run_test(size=(120, 30), notifications=False) as pilot:
            await table_of(pilot, ServicesScreen, 3)
            await pilot.pause(0.3)
            assert asked == ["services"]
            app.push_screen(TraceScreen(TRACE_ID))
            await until(
                pilot, lambda: isinstance(app.screen, TraceScreen) and bool(app.screen.nodes)
            )
            screen = app.screen
            assert isinstance(screen, TraceScreen)
            root = screen.query_one(Tree).root.children[0]
            root.collapse()
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen)
            await pilot.pause(0.3)
            assert asked == ["services", "trace"]  # (not asked again: the tree stays collapsed)
            assert screen.query_one(Tree).root.children[0].is_collapsed

    asyncio.run(scenario())


def test_a_row_drawn_before_its_columns_are_measured_is_drawn_again_at_their_widths() -> None:
    """Textual measures a table's columns when the table is next idle; a busy machine can draw
    the screen before that (the first row is drawn at once, to show the cursor on it). Once the
    columns are measured the row is drawn at their widths, not kept cut to the header's."""
    from textual.app import App, ComposeResult

    from ophion_cli.tui.widgets.table import Table

    class OneTable(App[None]):
        # (As high as the screens' tables: one that grows with its rows is resized, and a
        # resize draws it again anyway.)
        CSS = "Table { height: 1fr; }"

        def compose(self) -> ComposeResult:
            yield Table(cursor_type="row")

    async def scenario() -> None:
        app = OneTable()
        async with app.run_test(size=(60, 5)) as pilot:
            table = app.query_one(Table)
            table.add_column("service", key="service")
            await pilot.pause()
            table.add_row("checkout-service", key="checkout")
            assert table.render_line(1).text.split() == ["checkou"]  # (the screen drawn now)
            await until(pilot, lambda: table.columns["service"].content_width > len("service"))
            assert table.render_line(1).text.split() == ["checkout-service"]
            # The same when a refresh widens a cell in place.
            table.update_cell("checkout", "service", "checkout-service-eu", update_width=True)
            assert table.render_line(1).text.split() == ["checkout-service"]
            await until(pilot, lambda: table.columns["service"].content_width > 16)
            assert table.render_line(1).text.split() == ["checkout-service-eu"]

    asyncio.run(scenario())
