"""``ophion tui`` driven with Textual's pilot against a real daemon fed by the OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import DataTable

from ophion_cli.tui.app import HelpScreen, OphionTui, ServicesScreen, StatusBar, TracesScreen
from ophion_cli.tui.source import ApiSource
from tests.conftest import RunningDaemon
from tests.test_query_e2e import send_shop


async def until(pilot: Pilot[None], done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``done()`` holds (its workers answer in their own time)."""
    for _ in range(int(timeout / 0.05)):
        if done():
            return
        await pilot.pause(0.05)
    raise AssertionError("the app did not get there in time")


def _cells(table: DataTable[object], column: str) -> list[str]:
    return [str(table.get_cell(row, column)) for row in table.rows]


def _app(daemon: RunningDaemon) -> OphionTui:
    return OphionTui(ApiSource(f"unix:{daemon.home / 'state' / 'api.sock'}", None), refresh_s=0.3)


def test_from_a_service_to_its_traces(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)

    async def scenario() -> None:
        app = _app(daemon)
        async with app.run_test(size=(100, 30), notifications=False) as pilot:
            await until(
                pilot,
                lambda: (
                    isinstance(app.screen, ServicesScreen)
                    and app.screen.query_one(DataTable).row_count == 3
                ),
            )
            table = app.screen.query_one(DataTable)
            assert sorted(_cells(table, "service")) == ["batch", "checkout", "frontend"]
            row = {c: str(table.get_cell("checkout", c)) for c in ("errors", "p50")}
            assert row["errors"] == "20.0%"
            # Enter on checkout: its traces, the failed ones marked.
            table.move_cursor(row=table.get_row_index("checkout"))
            await pilot.press("enter")
            await until(
                pilot,
                lambda: (
                    isinstance(app.screen, TracesScreen)
                    and app.screen.query_one(DataTable).row_count == 10
                ),
            )
            traces = app.screen.query_one(DataTable)
            assert {str(k.value) for k in traces.rows} == set(shop.request_ids)
            assert _cells(traces, "status").count("error") == 2
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

    from ophion_cli.tui.app import KEYS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "tui.md").read_text()
    rows = {
        (where.strip(), key.strip().strip("`").replace("` / `", " / "), what.strip())
        for where, key, what in (
            line.strip("|").split("|") for line in doc.splitlines() if line.startswith("| ")
        )
        if where.strip() != "where"
    }
    assert rows == set(KEYS)
