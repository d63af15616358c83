"""``ophion sql``: the result as a table or as CSV, and the notes about how it was read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ophion_cli.output import print_json, stdout_console

_out = stdout_console()


def result_table(result: dict[str, Any]) -> None:
    """The rows as a table, nested values (attributes, lists) as JSON text, then the row count."""
    table = Table(header_style="bold", show_lines=False)
    for column in result["columns"]:
        table.add_column(column, overflow="fold")
    for row in result["rows"]:
        table.add_row(
            *(
                ""
                if v is None
                else json.dumps(v, ensure_ascii=False)
                if isinstance(v, dict | list)
                else str(v)
                for v in row
            )
        )
    _out.print(table)
    _out.print(f"[dim]{len(result['rows'])} row(s)[/]")


def result_csv(result: dict[str, Any]) -> None:
    """RFC 4180 CSV on stdout; nested values (attributes, lists) as JSON text."""
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(result["columns"])
    for row in result["rows"]:
        writer.writerow(
            ""
            if v is None
            else json.dumps(v, ensure_ascii=False)
            if isinstance(v, dict | list)
            else v
            for v in row
        )


def result_json(result: dict[str, Any]) -> None:
    """The rows as one JSON array of objects, column name to value (the ``--json`` contract)."""
    print_json([dict(zip(result["columns"], row, strict=True)) for row in result["rows"]])


def truncated(max_rows: int) -> None:
    """On stderr: the result stops at --max-rows."""
    Console(stderr=True).print(
        f"[yellow]note:[/] only the first {max_rows} rows are shown; raise --max-rows or add LIMIT"
    )


def reading_directly(data_dir: Path | str) -> None:
    """On stderr: the daemon is down, so the partition files are read directly."""
    Console(stderr=True).print(
        f"[dim]ophiond is not running; reading {data_dir} directly (read-only)[/]"
    )


def unstored_records() -> None:
    """On stderr: the daemon stopped uncleanly, so its journal holds records the files lack."""
    Console(stderr=True).print(
        "[yellow]ophiond stopped without a clean shutdown: records it acknowledged last "
        "are still in its journal and not in these results; they are stored when it "
        "starts again[/]"
    )
