"""Rich rendering of command results; fetching lives in the commands, so --json shows the same data."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ophion_cli.output import human_bytes, human_duration

# soft_wrap: paths and commands are printed whole, so they can be copied.
_out = Console(highlight=False, soft_wrap=True)


def note(text: str) -> None:
    _out.print(text)


# (label, key) of the per-signal counters, in the order people read them.
_COUNTERS = (
    ("requests", "requests"),
    ("received", "received"),
    ("stored", "stored"),
    ("rejected", "rejected"),
    ("refused", "refused"),
    ("failed", "failed"),
    ("invalid requests", "invalid_requests"),
)


def status(doc: dict[str, Any]) -> None:
    storage = doc["storage"]
    queue = doc["queue"]
    daemon_summary(doc)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("signal")
    for label, _key in _COUNTERS:
        table.add_column(label, justify="right")
    for name, counts in doc["signals"].items():
        table.add_row(name, *(f"{counts[key]:,}" for _label, key in _COUNTERS))
    _out.print()
    _out.print(table)
    _out.print()
    _out.print(f"queue    {queue['depth']:,} of {queue['capacity']:,} records waiting")
    _out.print(
        f"storage  {human_bytes(storage['bytes'])} in {storage['partitions']} partition file(s) "
        f"under {storage['data_dir']}"
    )
    _out.print(
        f"         retention: {human_duration(storage['retention_max_age_s'])} or "
        f"{human_bytes(storage['retention_max_disk'])}, whichever comes first"
    )


def query_result(result: dict[str, Any]) -> None:
    import json

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


def query_csv(result: dict[str, Any]) -> None:
    """RFC 4180 CSV on stdout; nested values (attributes, lists) as JSON text."""
    import csv
    import json
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


def started(running: Any, paths: Any) -> None:
    listen = running.listen
    _out.print(f"ophiond started (pid {running.pid})")
    _out.print(f"  OTLP/gRPC  {listen.get('grpc') or 'off'}")
    _out.print(f"  OTLP/HTTP  {listen.get('http') or 'off'}")
    if listen.get("api_tcp"):
        _out.print(f"  API/TCP    http://{listen['api_tcp']}")
    _out.print(f"  log        {paths.log_file}")


def daemon_summary(summary: dict[str, Any]) -> None:
    """The first lines of ``ophion status`` and all of ``ophion daemon status``."""
    listen = summary["listen"]
    _out.print(
        f"[bold green]ophiond {summary['version']}[/] running, pid {summary['pid']}, "
        f"up {human_duration(summary['uptime_s'])}"
    )
    _out.print(f"  OTLP/gRPC  {listen['grpc'] or 'off'}")
    _out.print(f"  OTLP/HTTP  {listen['http'] or 'off'}")
    _out.print(f"  API        {listen['api']}")
    if listen.get("api_tcp"):
        _out.print(f"  API/TCP    http://{listen['api_tcp']}  (bearer tokens)")


def installed(result: Any, user: bool, now: bool) -> None:
    scope = "--user " if user else ""
    _out.print(f"wrote {result.unit_path}")
    if result.config_path is not None:
        _out.print(f"settings in {result.config_path}")
    for warning in result.warnings:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning}")
    if now and result.reloaded:
        _out.print("ophiond.service enabled and started")
    elif result.reloaded:
        _out.print(f"start it now and at boot with: systemctl {scope}enable --now ophiond")
    else:
        _out.print(
            f"systemd is not running here; where it is, run: systemctl {scope}daemon-reload && "
            f"systemctl {scope}enable --now ophiond"
        )
