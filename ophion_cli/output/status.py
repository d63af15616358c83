"""``ophion status``, ``ophion daemon ...`` and ``ophion audit``: the daemon, its counters,
its storage, its jobs and what it did.

Fetching lives in the commands, so ``--json`` shows the same data."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ophion_cli.output import human_bytes, human_duration, stdout_console

if TYPE_CHECKING:
    from ophiond.api.contract import AuditPage, StatusDoc

_out = stdout_console()


def note(text: str) -> None:
    _out.print(text)


# (label, key) of the per-signal counters, in the order people read them: what came in, what
# was turned away, what was accepted (acknowledged) and where that is now. Those after the
# blank key show only when one is not zero.
_COUNTERS = (
    ("requests", "requests"),
    ("received", "received"),
    ("rejected", "rejected"),
    ("refused", "refused"),
    ("accepted", "accepted"),
    ("stored", "stored"),
    ("waiting", "waiting"),
)
_RARE_COUNTERS = (
    ("failed", "failed"),
    ("invalid requests", "invalid_requests"),
    ("dead-lettered", "dead_lettered"),
    ("lost", "lost"),
    ("recovered", "recovered"),
)


def status(doc: StatusDoc) -> None:
    storage = doc["storage"]
    queue = doc["queue"]
    signals = doc["signals"]
    daemon_summary(doc)
    counters = [
        *_COUNTERS,
        *(c for c in _RARE_COUNTERS if any(s.get(c[1]) for s in signals.values())),
    ]
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("signal")
    for label, _key in counters:
        table.add_column(label, justify="right")
    for name, counts in signals.items():
        table.add_row(name, *(f"{counts.get(key, 0):,}" for _label, key in counters))
    _out.print()
    _out.print(table)
    _out.print()
    _out.print(
        f"queue    {queue['depth']:,} of {queue['capacity']:,} records accepted or arriving "
        "and not yet stored"
    )
    _out.print(
        f"storage  {human_bytes(storage['bytes'])} in {storage['partitions']} partition file(s) "
        f"under {storage['data_dir']}"
    )
    _out.print(
        f"         retention: {human_duration(storage['retention_max_age_s'])} or "
        f"{human_bytes(storage['retention_max_disk'])}, whichever comes first"
    )
    _storage_problems(storage)
    state = doc.get("state")
    if state:
        _out.print(
            f"state    {human_bytes(state['bytes'])} in {state['path']} (the audit log; "
            "never deleted by retention)"
        )
    _jobs(doc.get("jobs") or [])


def _jobs(jobs: list[dict[str, Any]]) -> None:
    """The daemon's scheduled jobs: what each does, its last run and its next."""
    if not jobs:
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("job", "every", "last run", "outcome", "next run"):
        table.add_column(column)
    for job in jobs:
        if job["last_run"] is None:
            outcome = "not run yet"
        elif job["last_error"]:
            outcome = f"[red]failed[/]: {escape(job['last_error'])}"
        else:
            outcome = f"ok in {job['last_duration_s']:.2f} s"
        if job["missed"]:
            outcome += f" [yellow]({job['missed']} missed)[/]"
        table.add_row(
            job["name"],
            human_duration(job["interval_s"]),
            _clock(job["last_run"]),
            outcome,
            _clock(job["next_run"]),
        )
    _out.print()
    _out.print(table)


def _clock(iso: str | None) -> str:
    """An ISO time as the local wall-clock time (with the date when it is not today)."""
    if iso is None:
        return "-"
    import datetime as dt

    when = dt.datetime.fromisoformat(iso).astimezone()
    if when.date() == dt.datetime.now().astimezone().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _storage_problems(storage: dict[str, Any]) -> None:
    """What went wrong with storing, in red or yellow; nothing when all is well."""
    if storage.get("failing"):
        _out.print(
            f"[bold red]storage is failing[/] since {storage['failing_since']}: "
            f"{escape(storage['error'] or '')}\n"
            "         accepted records wait in the journal and are stored once it works again"
        )
    dead = storage.get("dead_letters") or {}
    if dead.get("requests"):
        records = ", ".join(f"{n:,} {signal}" for signal, n in dead["records"].items())
        _out.print(
            f"[yellow]dead letters[/] {dead['requests']:,} request(s) ({records} records) DuckDB "
            f"refused, kept in {dead['directory']}\n"
            f"         last: {escape(dead['last_reason'] or '')}"
        )
    for loss in storage.get("journal_losses") or []:
        _out.print(f"[red]journal loss[/] {escape(loss['message'])}")
    for damaged in storage.get("damaged_partitions") or []:
        _out.print(
            f"[red]damaged partition[/] {damaged['partition']} {escape(damaged['reason'])}; "
            f"set aside at {damaged['path']}"
        )


def started(running: Any, paths: Any) -> None:
    listen = running.listen
    _out.print(f"ophiond started (pid {running.pid})")
    _out.print(f"  OTLP/gRPC  {listen.get('grpc') or 'off'}")
    _out.print(f"  OTLP/HTTP  {listen.get('http') or 'off'}")
    if listen.get("api_tcp"):
        _out.print(f"  API/TCP    http://{listen['api_tcp']}")
    _out.print(f"  log        {paths.log_file}")


def daemon_summary(summary: Mapping[str, Any]) -> None:
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


def audit(page: AuditPage) -> None:
    """The audit log's entries, newest first, one per line."""
    entries = page["entries"]
    if not entries:
        note(f"no audit entries since {page['since']}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("time", "actor", "action", "subject", "detail"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        detail = ", ".join(f"{k}={_short(v)}" for k, v in entry["detail"].items())
        table.add_row(
            _clock(entry["time"]),
            escape(entry["actor"]),
            escape(entry["action"]),
            escape(entry["subject"] or ""),
            escape(detail),
        )
    _out.print(table)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 60 else text[:59] + "…"
