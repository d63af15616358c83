"""Shared fixtures: an isolated OPHION_HOME and environment, and a real ophiond on free ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ophiond.api.client import ApiClient
from ophiond.api.contract import SqlRequest

REPO = Path(__file__).resolve().parent.parent
# ophiond as the tests start it: the module of this checkout, on free loopback ports.
OPHIOND = [sys.executable, "-m", "ophiond"]
FREE_PORTS = ["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]


def ophion(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``ophion`` entry point in a subprocess (exit codes, stderr); ``env`` adds
    variables to the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "ophion_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **env} if env else None,
    )


@dataclass
class Exports:
    """What the SDK handed to an exporter, and the exporter's verdict on each batch."""

    batches: list[Any] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def check(self, daemon: RunningDaemon) -> None:
        """Fail unless something was exported and ophiond accepted every export."""
        assert self.batches, "the SDK exported nothing"
        assert self.verdicts == ["SUCCESS"] * len(self.verdicts), (self.verdicts, daemon.log())


ExporterT = TypeVar("ExporterT")


def recorded(exporter: ExporterT) -> tuple[ExporterT, Exports]:
    """Wrap ``exporter.export`` so the test sees what was sent and whether ophiond took it."""
    exports = Exports()
    send = exporter.export  # type: ignore[attr-defined]

    def export(batch: Any, *args: Any, **kwargs: Any) -> Any:
        result = send(batch, *args, **kwargs)
        exports.batches.append(batch)
        exports.verdicts.append(result.name if isinstance(result, Enum) else str(result))
        return result

    exporter.export = export  # type: ignore[attr-defined]
    return exporter, exports


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own OPHION_HOME and none of the developer's OTEL_/OPHION_ settings."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OPHION_", "OPENAI_", "NOTIFY_SOCKET", "WATCHDOG_")):
            monkeypatch.delenv(name)
    home = tmp_path / "ophion-home"
    monkeypatch.setenv("OPHION_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return home


@dataclass
class RunningDaemon:
    """A real ophiond process started by a test."""

    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def listen(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "state" / "listen.json").read_text())
        return data

    @property
    def grpc_endpoint(self) -> str:
        return str(self.listen["grpc"])

    def http_url(self, path: str) -> str:
        return f"http://{self.listen['http']}{path}"

    @property
    def api(self) -> ApiClient:
        return ApiClient(self.home / "state" / "api.sock")

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of a query as dicts, through the daemon's API."""
        result = self.api.sql(SqlRequest(query))
        return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]

    def status(self) -> dict[str, Any]:
        return self.api.status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_daemon(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> RunningDaemon:
    """Start ``python -m ophiond`` on free ports and wait until it has written its listen file."""
    state = home / "state"
    listen_file = state / "listen.json"
    if listen_file.exists():
        listen_file.unlink()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"ophiond-{time.monotonic_ns()}.log"
    full_env = dict(os.environ, OPHION_HOME=str(home), PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*OPHIOND, *FREE_PORTS, *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
        )
    daemon = RunningDaemon(home, process, log_path)
    deadline = time.monotonic() + timeout
    while not listen_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"ophiond exited with {process.returncode}:\n{daemon.log()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"ophiond did not start in {timeout}s:\n{daemon.log()}")
        time.sleep(0.05)
    return daemon


def make_sdk_spans(count: int, name: str, service: str) -> Sequence[Any]:
    """Finished spans made by the real SDK, ready for an exporter's ``export``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("ophion.tests")
    for i in range(count):
        with tracer.start_as_current_span(f"{name}-{i}"):
            pass
    spans = recorder.get_finished_spans()
    provider.shutdown()
    return spans


@pytest.fixture
def daemon_factory(isolated_env: Path) -> Iterator[Any]:
    """Start daemons with extra flags; all are stopped (SIGKILL if need be) after the test."""
    started: list[RunningDaemon] = []

    def factory(
        *args: str, env: dict[str, str] | None = None, home: Path | None = None
    ) -> RunningDaemon:
        daemon = start_daemon(home or isolated_env, *args, env=env)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.terminate()
            try:
                daemon.process.wait(30)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()


@pytest.fixture
def daemon(daemon_factory: Any) -> RunningDaemon:
    """One real ophiond with default settings on free ports."""
    result: RunningDaemon = daemon_factory()
    return result
