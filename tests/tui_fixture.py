"""Fixed data for the terminal UI's snapshot tests: a source that answers every screen's
questions with the same documents, shaped like the daemon's (a contract test checks the keys
against a real daemon's answers), at a fixed time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ophiond.errors import DaemonNotRunning

T0 = 1_795_500_000_000_000_000  # 2026-11-24T06:00:00Z
MS = 1_000_000


def iso(ns: int) -> str:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(ns // 10**9, dt.UTC) + dt.timedelta(
        microseconds=(ns % 10**9) // 1000
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _service(
    name: str, rate: float, error_rate: float, p50: int, peaks: list[float]
) -> dict[str, Any]:
    return {
        "service": name,
        "requests": int(rate * 900),
        "request_rate": rate,
        "errors": int(rate * 900 * error_rate),
        "error_rate": error_rate,
        "p50_ns": p50 * MS,
        "p95_ns": p50 * 4 * MS,
        "p99_ns": p50 * 7 * MS,
        "spans": int(rate * 900 * 3),
        "measured_by": "server_spans",
        "last_seen": iso(T0 - 2 * 10**9),
        "rate_points": [
            {"time": iso(T0 - (24 - i) * 38 * 10**9), "rate": r, "error_rate": error_rate}
            for i, r in enumerate(peaks)
        ],
    }


SERVICES = {
    "since": iso(T0 - 900 * 10**9),
    "step_ns": 38 * 10**9,
    "services": [
        _service("checkout", 12.4, 0.021, 31, [10 + (i % 5) for i in range(24)]),
        _service("frontend", 25.0, 0.0, 18, [20 + (i % 7) for i in range(24)]),
        _service("payments", 6.1, 0.083, 140, [3 + (i % 3) * 2 for i in range(24)]),
    ],
}


def _span(
    span_id: str,
    parent: str | None,
    name: str,
    service: str,
    start_ms: int,
    end_ms: int,
    error: str | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "span_id": span_id,
        "parent_span_id": parent,
        "service_name": service,
        "name": name,
        "kind": "SERVER" if parent is None else "CLIENT",
        "status_code": "ERROR" if error else "UNSET",
        "status_message": error,
        "start": iso(T0 + start_ms * MS),
        "start_ns": T0 + start_ms * MS,
        "end_ns": T0 + end_ms * MS,
        "duration_ns": (end_ms - start_ms) * MS,
        "attributes": {"http.route": "/order"} if parent is None else {"peer.service": service},
        "resource_attributes": {"service.name": service, "host.name": "shop-1"},
        "scope_name": "shop",
        "scope_version": "1.0",
        "trace_state": None,
        "events": events or [],
        "links": [],
    }


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE = {
    "trace_id": TRACE_ID,
    "start": iso(T0),
    "start_ns": T0,
    "duration_ns": 100 * MS,
    "services": ["checkout", "frontend", "payments"],
    "error": True,
    "critical_path": ["0000000000000001", "0000000000000003"],
    "spans": [
        _span("0000000000000001", None, "GET /order", "frontend", 0, 100),
        _span("0000000000000002", "0000000000000001", "load cart", "checkout", 5, 35),
        _span(
            "0000000000000003",
            "0000000000000001",
            "charge card",
            "payments",
            40,
            95,
            error="card declined",
            events=[
                {"time_ns": T0 + 41 * MS, "name": "gateway.request", "attributes": {"attempt": 1}}
            ],
        ),
        _span("0000000000000004", "0000000000000001", "audit log", "checkout", 50, 60),
    ],
}

TRACES = {
    "since": iso(T0 - 900 * 10**9),
    "traces": [
        {
            "trace_id": f"{i:02x}" + TRACE_ID[2:],
            "root_service": "frontend",
            "root_name": "GET /order" if i % 3 else "POST /pay",
            "start": iso(T0 - i * 7 * 10**9),
            "duration_ns": (40 + (i * 37) % 300) * MS,
            "spans": 4 + i % 5,
            "error": i % 4 == 0,
            "services": ["checkout", "frontend", "payments"][: 1 + i % 3],
        }
        for i in range(1, 30)
    ],
}

_LEVELS = [(9, "INFO"), (13, "WARN"), (17, "ERROR"), (5, "DEBUG"), (21, "FATAL")]
LOGS = [
    {
        "time": iso(T0 + i * 1_300 * MS),
        "time_ns": T0 + i * 1_300 * MS,
        "service": ["frontend", "checkout", "payments"][i % 3],
        "severity_number": _LEVELS[i % 5][0],
        "severity": _LEVELS[i % 5][1],
        "body": [
            "GET /order 200 in 31 ms",
            "cart loaded for customer 42",
            "charge failed: card declined",
            "cache probe",
            "worker crashed",
        ][i % 5],
        "body_type": "string",
        "trace_id": TRACE_ID if i % 5 in (0, 2) else None,
        "span_id": "0000000000000003"
        if i % 5 == 2
        else ("0000000000000001" if i % 5 == 0 else None),
        "attributes": {},
    }
    for i in range(12)
]

METRICS = {
    "since": iso(T0 - 900 * 10**9),
    "metrics": [
        {
            "name": "http.server.duration",
            "type": "histogram",
            "unit": "ms",
            "description": "",
            "services": ["checkout", "frontend"],
            "series": 2,
            "last_seen": iso(T0),
        },
        {
            "name": "shop.orders",
            "type": "sum",
            "unit": "{order}",
            "description": "",
            "services": ["checkout"],
            "series": 1,
            "last_seen": iso(T0),
        },
    ],
}


def _quantiles(i: int, base: float) -> dict[str, Any]:
    wave = (i % 12) / 12
    return {
        "time": iso(T0 - (60 - i) * 15 * 10**9),
        "p50": base * (1 + wave),
        "p95": base * (3 + 2 * wave),
        "p99": base * (5 + 3 * wave),
        "count_rate": 2.0 + wave,
    }


METRIC = {
    "name": "http.server.duration",
    "type": "histogram",
    "unit": "ms",
    "step_ns": 15 * 10**9,
    "since": iso(T0 - 900 * 10**9),
    "series": [
        {
            "service": "checkout",
            "attributes": {"http.route": "/pay"},
            "kind": "quantiles",
            "points": [_quantiles(i, 20) for i in range(60)],
        },
        {
            "service": "frontend",
            "attributes": {"http.route": "/order"},
            "kind": "quantiles",
            "points": [_quantiles(i, 12) for i in range(60)],
        },
    ],
}

MAP = {
    "since": iso(T0 - 900 * 10**9),
    "services": ["batch", "cart", "checkout", "frontend", "payments"],
    "edges": [
        {
            "source": "frontend",
            "target": "checkout",
            "calls": 11160,
            "errors": 234,
            "error_rate": 0.021,
            "p95_ns": 124 * MS,
        },
        {
            "source": "frontend",
            "target": "cart",
            "calls": 5400,
            "errors": 0,
            "error_rate": 0.0,
            "p95_ns": 12 * MS,
        },
        {
            "source": "checkout",
            "target": "payments",
            "calls": 5490,
            "errors": 456,
            "error_rate": 0.083,
            "p95_ns": 560 * MS,
        },
    ],
}


class _Stream:
    """A log stream that gives its records, then waits until closed (as a live one does)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._records
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()


class FixtureSource:
    """Every screen's answers, fixed; ``down`` makes it answer as a stopped daemon does."""

    def __init__(self, down: bool = False) -> None:
        self.down = down

    def _check(self) -> None:
        if self.down:
            raise DaemonNotRunning("no ophiond at unix:/run/ophion/api.sock")

    def status(self) -> dict[str, Any]:
        self._check()
        return {
            "version": "0.1.0",
            "signals": {s: {"accepted": 1000} for s in ("traces", "logs", "metrics")},
        }

    def services(self, since: str, step: str | None = None) -> dict[str, Any]:
        self._check()
        return SERVICES

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return TRACES

    def trace(self, trace_id: str) -> dict[str, Any]:
        self._check()
        return TRACE

    def logs(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return {"since": iso(T0), "logs": [r for r in LOGS if r["trace_id"] == TRACE_ID][:4]}

    def metrics(self, since: str) -> dict[str, Any]:
        self._check()
        return METRICS

    def metric(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return METRIC

    def service_map(self, since: str) -> dict[str, Any]:
        self._check()
        return MAP

    def open_log_stream(self, params: dict[str, Any]) -> _Stream:
        self._check()
        return _Stream(LOGS)
