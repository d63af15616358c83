"""The ophion command against a real daemon: status, sql, daemon start/stop/status/install."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ophion
from typer.testing import CliRunner

from ophion_cli.main import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _send_spans(daemon: Any, names: list[str]) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "cli-test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=daemon.http_url("/v1/traces")))
    )
    tracer = provider.get_tracer("cli")
    for name in names:
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()


def test_status_json_shows_counts_and_addresses(daemon: Any) -> None:
    _send_spans(daemon, ["a", "b", "c"])
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["pid"] == daemon.process.pid
    assert doc["listen"]["grpc"] == daemon.listen["grpc"]
    assert doc["listen"]["http"] == daemon.listen["http"]
    assert doc["signals"]["traces"]["accepted"] == 3
    assert doc["signals"]["traces"]["stored"] + doc["signals"]["traces"]["waiting"] == 3
    assert doc["signals"]["traces"]["received"] == 3
    assert doc["storage"]["partitions"] == 1 and doc["storage"]["bytes"] > 0


def test_status_table_for_people(daemon: Any) -> None:
    _send_spans(daemon, ["a"])
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0
    assert f"pid {daemon.process.pid}" in result.stdout
    assert daemon.listen["http"] in result.stdout
    assert "traces" in result.stdout and "queue" in result.stdout


def test_sql_json_returns_rows_as_objects(daemon: Any) -> None:
    _send_spans(daemon, ["first", "second"])
    result = runner.invoke(
        app, ["sql", "SELECT name, service_name, kind FROM spans ORDER BY name", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"name": "first", "service_name": "cli-test", "kind": "INTERNAL"},
        {"name": "second", "service_name": "cli-test", "kind": "INTERNAL"},
    ]


def test_sql_csv(daemon: Any) -> None:
    _send_spans(daemon, ["b, with comma", "a"])
    result = runner.invoke(
        app, ["sql", "SELECT name, attributes, parent_span_id FROM spans ORDER BY name", "--csv"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "name,attributes,parent_span_id",
        "a,{},",
        '"b, with comma",{},',
    ]


def test_sql_table_and_row_limit(daemon: Any) -> None:
    _send_spans(daemon, ["x", "y", "z"])
    result = ophion("sql", "SELECT name FROM spans ORDER BY name", "--max-rows", "2")
    assert result.returncode == 0
    assert "x" in result.stdout and "y" in result.stdout and "│ z" not in result.stdout
    assert "only the first 2 rows" in result.stderr


def test_sql_errors_are_one_line_without_traceback(daemon: Any) -> None:
    result = ophion("sql", "DELETE FROM spans")
    assert result.returncode == 1
    assert result.stderr.startswith("error: only SELECT queries are allowed, not DELETE")
    assert "Traceback" not in result.stderr
    result = ophion("sql", "SELECT nope FROM spans")
    assert (
        result.returncode == 1 and "SQL error" in result.stderr and "Traceback" not in result.stderr
    )


def test_sql_reads_the_files_when_the_daemon_is_down(daemon: Any) -> None:
    _send_spans(daemon, ["kept"])
    assert daemon.stop() == 0
    result = ophion("sql", "SELECT name FROM spans", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"name": "kept"}]
    assert "not running" in result.stderr and "read-only" in result.stderr


def test_sql_after_a_crash_says_the_journal_holds_more(daemon: Any, daemon_factory: Any) -> None:
    _send_spans(daemon, ["journaled"])  # acknowledged: in the journal, not yet flushed
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    result = ophion("sql", "SELECT count(*) AS n FROM spans", "--json")
    assert result.returncode == 0, result.stderr
    assert "without a clean shutdown" in result.stderr and "journal" in result.stderr
    restarted = daemon_factory(home=daemon.home)
    assert restarted.sql("SELECT name FROM spans") == [{"name": "journaled"}]
    assert restarted.stop() == 0
    result = ophion("sql", "SELECT name FROM spans", "--json")
    assert json.loads(result.stdout) == [{"name": "journaled"}]
    assert "journal" not in result.stderr
    # Flushed into DuckDB, then killed before a checkpoint: its journal segment is kept until
    # one, but the records are in DuckDB's files, so nothing is said to be missing.
    again = daemon_factory(home=daemon.home)
    _send_spans(again, ["flushed"])
    assert len(again.sql("SELECT name FROM spans")) == 2
    assert again.stop(signal.SIGKILL) == -signal.SIGKILL
    result = ophion("sql", "SELECT count(*) AS n FROM spans", "--json")
    assert json.loads(result.stdout) == [{"n": 2}]
    assert "journal" not in result.stderr


def test_status_without_daemon_says_how_to_start_it() -> None:
    result = ophion("status")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith("error: ophiond is not running")
    assert "ophion daemon start" in result.stderr
    assert "Traceback" not in result.stderr


def test_daemon_start_status_stop(isolated_env: Path) -> None:
    started = ophion(
        "daemon", "start", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "ophiond started (pid" in started.stdout
        status = ophion("daemon", "status", "--json")
        assert status.returncode == 0
        doc = json.loads(status.stdout)
        assert doc["running"] is True
        pid = doc["pid"]
        again = ophion("daemon", "start")
        assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr
    finally:
        stopped = ophion("daemon", "stop")
    assert stopped.returncode == 0 and f"(pid {pid}) stopped" in stopped.stdout
    assert "stopped cleanly" in (isolated_env / "state" / "ophiond.log").read_text()
    after = ophion("daemon", "status")
    assert after.returncode == 3 and "not running" in after.stdout
    assert ophion("daemon", "stop").stdout.strip() == "ophiond is not running"


def test_daemon_start_reports_why_it_failed(isolated_env: Path) -> None:
    result = ophion("daemon", "start", "--grpc-listen", "nonsense")
    assert result.returncode == 1
    assert "exited with code 2" in result.stderr and "grpc_listen" in result.stderr


def test_daemon_install_user_unit(isolated_env: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["daemon", "install", "--user"])
    assert result.exit_code == 0, result.output
    unit = tmp_path / "xdg-config" / "systemd" / "user" / "ophiond.service"
    text = unit.read_text()
    assert "Type=notify" in text and "@OPHIOND@" not in text
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "ophiond" in exec_start
    assert str(unit) in result.stdout


def test_system_unit_is_hardened_and_notifies() -> None:
    text = (REPO / "share" / "systemd" / "ophiond.service").read_text()
    for line in (
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=ophion",
        "DynamicUser=yes",
        "WatchdogSec=",
        "Environment=OPHION_HOME=/var/lib/ophion",
    ):
        assert line in text


def test_every_command_has_help() -> None:
    import typer.main

    seen: list[str] = []

    def walk(group: Any, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            assert command.help, f"ophion {' '.join([*prefix, name])} has no help"
            result = runner.invoke(app, [*prefix, name, "--help"])
            assert result.exit_code == 0
            seen.append(" ".join([*prefix, name]))
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    assert {"status", "sql", "daemon run", "daemon start", "daemon stop", "daemon install"} <= set(
        seen
    )


def test_permission_denied_on_the_socket_names_the_file(daemon: Any) -> None:
    """A socket the caller may not open: owned by another user, mode 0600. Root would pass
    any permission check, so the CLI runs without capabilities (setpriv) when we are root."""
    import os
    import shutil

    socket_path = daemon.home / "state" / "api.sock"
    command = [sys.executable, "-m", "ophion_cli", "status"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux setpriv is needed to drop root's capabilities"
        os.chown(socket_path, 65534, 65534)
        command = [setpriv, "--bounding-set", "-all", "--inh-caps", "-all", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert f"permission denied on {socket_path}" in result.stderr
    assert "Traceback" not in result.stderr
