"""Every screen of ``ophion tui`` as it renders, with fixed data, at 80x24 and at 160x48.

The SVGs under tests/__snapshots__/ are what a user sees; update them after a deliberate
change with ``python3 -m pytest tests/test_tui_snapshots.py --snapshot-update`` and look at
them (``snapshot_report.html``) before committing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rich.text import Text
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_fixture import LOGS, TRACE_ID, FixtureSource

from ophion_cli.tui.app import OphionTui
from ophion_cli.tui.screens.help import HelpScreen
from ophion_cli.tui.screens.logs import LogsScreen
from ophion_cli.tui.screens.metrics import MetricScreen
from ophion_cli.tui.screens.service_map import MapScreen
from ophion_cli.tui.screens.services import ServicesScreen
from ophion_cli.tui.screens.trace import TraceScreen
from ophion_cli.tui.screens.traces import TracesScreen
from ophiond.api.contract import LogQuery, MetricQuery, ServicesQuery, TraceQuery

SIZES = [(80, 24), (160, 48)]


def _app(down: bool = False) -> OphionTui:
    # Status polled once (no rate to show: it needs two polls), screens refreshed rarely.
    return OphionTui(FixtureSource(down), refresh_s=3600, status_s=3600)


async def _settle(pilot: Pilot[None], ready: Callable[[], bool]) -> None:
    """Wait until ``ready``, the status bar has the daemon's first answer and the screen's
    tables have measured their rows, then until the screen stops changing (what they set off
    can still be on its way to the screen)."""
    app = pilot.app
    assert isinstance(app, OphionTui)
    for _ in range(400):
        if (
            ready()
            and (app.daemon_version or app.daemon_error is not None)
            and all(_measured(table) for table in app.screen.query(DataTable))
        ):
            break
        await pilot.pause(0.05)
    else:
        raise AssertionError("the screen did not get ready")
    previous = pilot.app.export_screenshot()
    for _ in range(40):
        await pilot.pause(0.25)
        current = pilot.app.export_screenshot()
        if current == previous:
            return
        previous = current


def _open(
    screen: Callable[[], Any], ready: Callable[[Any], bool]
) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        # The services screen first, laid out with its rows: a screen pushed over it (help is
        # drawn over it) must not catch it half done when the machine is busy.
        await _settle(
            pilot, lambda: isinstance(app.screen, ServicesScreen) and _rows(app.screen) == 3
        )
        pushed = screen()
        if pushed is not None:
            app.push_screen(pushed)
        await _settle(pilot, lambda: ready(app.screen))

    return run_before


def _rows(screen: Any) -> int:
    try:
        return int(screen.query_one(DataTable).row_count)
    except NoMatches:  # (not composed yet)
        return -1


def _measured(table: DataTable[Any]) -> bool:
    """Each column is as wide as its widest cell: the table measured its rows (it does so when
    next idle after they came), so the widths the snapshot shows are the final ones."""
    for key, column in table.columns.items():
        cells = (Text.from_markup(c) if isinstance(c, str) else c for c in table.get_column(key))
        if any(cell.cell_len > column.content_width for cell in cells):
            return False
    return True


CASES: dict[str, Callable[[Pilot[None]], Awaitable[None]]] = {
    "services": _open(lambda: None, lambda s: _rows(s) == 3),
    "traces": _open(lambda: TracesScreen(service="checkout"), lambda s: _rows(s) == 29),
    "trace": _open(lambda: TraceScreen(TRACE_ID), lambda s: bool(getattr(s, "nodes", None))),
    "logs": _open(LogsScreen, lambda s: _rows(s) == len(LOGS) and not s.incoming),
    "metric": _open(
        lambda: MetricScreen("http.server.duration"), lambda s: getattr(s, "doc", None) is not None
    ),
    "map": _open(MapScreen, lambda s: _rows(s) == 3),
    "help": _open(HelpScreen, lambda s: isinstance(s, HelpScreen)),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(CASES))
def test_screen(snap_compare: Any, name: str, size: tuple[int, int]) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=CASES[name])


def test_logs_paused_with_a_search(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await CASES["logs"](pilot)
        await pilot.press("space")
        await pilot.press("slash", *"card", "enter")
        await _settle(pilot, lambda: getattr(pilot.app.screen, "search", None) == "card")

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run_before)


def test_daemon_down(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await _settle(pilot, lambda: isinstance(pilot.app.screen, ServicesScreen))

    assert snap_compare(_app(down=True), terminal_size=(80, 24), run_before=run_before)


def test_the_fixture_documents_have_the_daemons_shape(daemon: Any) -> None:
    """The snapshots' data answers with the keys a real daemon's answers have, so the
    snapshots cannot drift from what the screens get."""
    import time

    import tui_fixture as fx
    from otel_senders import (
        RECORDS,
        S,
        send_known_trace,
        send_records,
        send_shop,
        send_shop_metrics,
    )

    known = send_known_trace(daemon)
    send_shop(daemon)
    send_records(daemon, RECORDS, time.time_ns() - 60 * S)
    send_shop_metrics(daemon)
    api = daemon.api

    def same_keys(fixture: Any, real: Any, where: str) -> None:
        if isinstance(fixture, dict):
            assert isinstance(real, dict) and set(fixture) == set(real), (where, fixture, real)
            for key in ("attributes", "resource_attributes"):
                fixture, real = dict(fixture), dict(real)
                fixture.pop(key, None), real.pop(key, None)  # (free-form)
            for key in fixture:
                same_keys(fixture[key], real[key], f"{where}.{key}")
        elif isinstance(fixture, list) and fixture:
            assert real, f"{where}: the daemon answered no items to compare with"
            same_keys(fixture[0], real[0], f"{where}[0]")

    same_keys(fx.SERVICES, api.services(ServicesQuery("15m", "38s")), "services")
    same_keys(fx.TRACES, api.traces(TraceQuery("15m")), "traces")
    same_keys(fx.TRACE, api.trace(known.trace_id), "trace")
    same_keys(fx.LOGS, api.logs(LogQuery("15m"))["logs"], "logs")
    same_keys(fx.METRICS, api.metrics("15m"), "metrics")
    metric = api.metric(MetricQuery("shop.latency", "15m"))
    same_keys(fx.METRIC, metric, "metric")
    same_keys(fx.MAP, api.service_map("15m"), "map")
