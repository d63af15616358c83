"""ophiond as a process: systemd notifications, one daemon per state directory, clean stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FREE_PORTS, OPHIOND


def _receive_all(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(until in m for m in messages):
            break
    return messages


def test_sd_notify_ready_watchdog_stopping(daemon_factory: Any, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        daemon = daemon_factory(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"})
        assert any("READY=1" in m for m in _receive_all(sock, "READY=1"))
        assert any("WATCHDOG=1" in m for m in _receive_all(sock, "WATCHDOG=1"))
        daemon.process.send_signal(signal.SIGTERM)
        assert any("STOPPING=1" in m for m in _receive_all(sock, "STOPPING=1"))
        assert daemon.process.wait(30) == 0


def test_sigterm_and_sigint_stop_cleanly_and_remove_state_files(daemon_factory: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        daemon = daemon_factory()
        state = daemon.home / "state"
        assert (state / "ophiond.pid").read_text().strip() == str(daemon.process.pid)
        assert daemon.stop(sig) == 0
        assert "stopped cleanly" in daemon.log()
        assert not (state / "ophiond.pid").exists()
        assert not (state / "api.sock").exists()
        assert not (state / "listen.json").exists()


def test_a_second_daemon_on_the_same_state_directory_is_refused(daemon: Any) -> None:
    second = subprocess.run(
        [*OPHIOND, *FREE_PORTS],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "another ophiond already runs" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.status()["pid"] == daemon.process.pid  # the first one is unharmed


def test_a_port_in_use_is_reported_plainly(daemon: Any, isolated_env: Path) -> None:
    taken = daemon.listen["http"]
    other = subprocess.run(
        [*OPHIOND, "--grpc-listen", "off", "--http-listen", taken],
        capture_output=True,
        text=True,
        timeout=30,
        env={"OPHION_HOME": str(isolated_env.parent / "other"), "PATH": "/usr/bin:/bin"},
    )
    assert other.returncode == 1
    assert f"cannot listen for OTLP/HTTP on {taken}" in other.stderr
    assert "Traceback" not in other.stderr


def test_bad_settings_exit_2_with_one_line(isolated_env: Path) -> None:
    result = subprocess.run(
        [*OPHIOND, "--retention-max-age", "forever"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ophiond: retention_max_age: 'forever' is not a duration")
    assert len(result.stderr.strip().splitlines()) == 1


def test_environment_and_config_file_reach_the_daemon(
    daemon_factory: Any, isolated_env: Path
) -> None:
    isolated_env.mkdir(parents=True, exist_ok=True)
    (isolated_env / "config.toml").write_text('queue_size = 1234\nretention_max_disk = "2GB"\n')
    daemon = daemon_factory(env={"OPHION_RETENTION_MAX_AGE": "3d"})
    status = daemon.status()
    assert status["queue"]["capacity"] == 1234
    assert status["storage"]["retention_max_disk"] == 2_000_000_000
    assert status["storage"]["retention_max_age_s"] == 3 * 86400


@pytest.mark.parametrize("listener", ["grpc", "http"])
def test_a_receiver_can_be_turned_off(daemon_factory: Any, listener: str) -> None:
    daemon = daemon_factory(f"--{listener}-listen", "off")
    assert daemon.listen[listener] is None
    assert daemon.status()["listen"][listener] is None


def test_listens_on_ipv6_loopback(daemon_factory: Any) -> None:
    import urllib.request

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    daemon = daemon_factory("--grpc-listen", "[::1]:0", "--http-listen", "[::1]:0")
    assert daemon.listen["http"].startswith("[::1]:") and daemon.listen["grpc"].startswith("[::1]:")
    request = urllib.request.Request(
        daemon.http_url("/v1/traces"),
        data=ExportTraceServiceRequest().SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_an_idle_api_client_does_not_hold_up_a_stop(daemon: Any) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(daemon.home / "state" / "api.sock"))
        idle.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")  # now idle on a keep-alive connection
        started = time.monotonic()
        assert daemon.stop(timeout=20) == 0
        assert time.monotonic() - started < 10


def test_data_and_state_are_private_to_the_daemon_user(daemon: Any) -> None:
    import stat

    for path in (daemon.home / "data", daemon.home / "state"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (daemon.home / "data").glob("[0-9]*.duckdb"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((daemon.home / "state" / "api.sock").stat().st_mode) == 0o600
