"""``ophion sql``: one read-only query over the stored telemetry, through the daemon or, when it
is down, straight from the partition files."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from ophion_cli.options import ApiOption, JsonOption, TokenOption, client
from ophion_cli.output import sql as show
from ophiond.api.contract import SqlRequest
from ophiond.errors import DaemonNotRunning

app = typer.Typer()


@app.command()
def sql(
    query: Annotated[
        str,
        typer.Argument(help="One SELECT over spans, span_events, span_links, logs, metric_points."),
    ],
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
    csv_output: Annotated[
        bool, typer.Option("--csv", help="Print CSV with a header row instead of a table.")
    ] = False,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Return at most this many rows.")
    ] = 10_000,
) -> None:
    """Run a read-only SQL query over the stored telemetry (docs/sql.md lists the views)."""
    if json_output and csv_output:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="--csv")
    try:
        result: Any = client(api, token).sql(SqlRequest(query, max_rows))
    except DaemonNotRunning:
        if api or os.environ.get("OPHION_API"):
            raise
        result = _sql_without_daemon(query, max_rows)
    if json_output:
        show.result_json(result)
    elif csv_output:
        show.result_csv(result)
    else:
        show.result_table(result)
    if result["truncated"]:
        show.truncated(max_rows)


def _sql_without_daemon(query: str, max_rows: int) -> dict[str, Any]:
    """The daemon is down: read the partition files directly, read-only."""
    from ophiond.config import load_settings
    from ophiond.store.journal import unstored_bytes
    from ophiond.store.query import open_read_only, run_query

    settings = load_settings().validate()
    show.reading_directly(settings.paths.data_dir)
    partitions = open_read_only(
        settings.paths.data_dir, settings.memory_limit, settings.sql_max_spill
    )
    try:
        # (segments up to the partitions' journal position are in DuckDB, its WAL included)
        if unstored_bytes(settings.paths.data_dir, partitions.journal_position()):
            show.unstored_records()
        return run_query(partitions, query, max_rows, settings.sql_timeout).to_json()
    finally:
        partitions.close()
