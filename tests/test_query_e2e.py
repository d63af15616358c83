"""End to end: the query commands against a real ophiond fed by the real OpenTelemetry SDK.

Every scenario builds telemetry of a known shape with explicit clocks (tests/otel_senders.py),
exports it with the SDK's OTLP exporters (gRPC and HTTP), and reads it back through
``ophion ... --json`` or the API client, field by field. The commands run in-process with
Typer's CliRunner (stdout is the JSON document), and in a subprocess (``python -m ophion_cli``)
where exit codes, stderr and signals are what is checked.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, ophion
from opentelemetry._logs import SeverityNumber
from otel_senders import (
    CHECKOUT_MS,
    FAILED,
    FAILED_JOBS,
    FRONTEND_MS,
    JOB_MS,
    MS,
    NEIGHBOUR_TRACE,
    RECORDS,
    SPAN_ONE,
    TRACE_ONE,
    TRACE_TWO,
    ChosenTraceIds,
    Record,
    S,
    Shop,
    grpc_spans,
    make_span,
    send_known_trace,
    send_records,
    send_shop,
    send_shop_metrics,
    span_hex,
    span_sender,
)
from typer.testing import CliRunner

from ophion_cli.main import app
from ophiond.api.client import ApiStream, connect
from ophiond.api.contract import LogQuery, ServicesQuery, TraceQuery
from ophiond.errors import DaemonNotRunning, InvalidParameter, OphionError

REPO = Path(__file__).resolve().parent.parent

runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# Running the CLI


def cli_json(*args: str) -> Any:
    """``ophion ARGS --json`` in-process: the JSON document it printed on stdout."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def cli_text(*args: str) -> str:
    """``ophion ARGS`` in-process: what it printed for people."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int) -> None:
    """An expected failure: the exit code, nothing on stdout, no traceback on stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# Expected values, computed independently of ophiond


def quantile_cont(values: Iterable[int], q: float) -> float:
    """Linear interpolation between the closest ranks (DuckDB's quantile_cont, numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def quantiles_ns(values: Iterable[int]) -> tuple[int, int, int]:
    """p50, p95 and p99 of ``values`` in whole nanoseconds."""
    kept = list(values)
    p50, p95, p99 = (round(quantile_cont(kept, q)) for q in (0.5, 0.95, 0.99))
    return p50, p95, p99


def assert_iso(shown: str | None, unix_ns: int) -> None:
    """An API time (ISO 8601, UTC, ``Z``) shows ``unix_ns`` to the microsecond."""
    assert shown is not None and shown.endswith("Z"), shown
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=unix_ns // 1000)
    assert dt.datetime.fromisoformat(shown) == expected, (shown, unix_ns)


def whole_second_iso(unix_ns: int) -> str:
    """The start of the one-second step holding ``unix_ns``."""
    moment = dt.datetime.fromtimestamp(unix_ns // S, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Reading the shop (tests/otel_senders.py) back


def trace_rows(*args: str) -> list[dict[str, Any]]:
    """``ophion traces ARGS --json``: the rows."""
    doc = cli_json("traces", *args)
    assert set(doc) == {"since", "traces"}
    return list(doc["traces"])


def without_start(rows: list[dict[str, Any]], shop: Shop) -> list[dict[str, Any]]:
    """Check each row's start against the clock it was sent with, then leave it out."""
    for row in rows:
        assert_iso(row["start"], shop.start_of(row["trace_id"]))
    return [{k: v for k, v in row.items() if k != "start"} for row in rows]


# ---------------------------------------------------------------------------------------------
# services


def test_services_rates_errors_and_quantiles(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)
    doc = cli_json("services")
    dt.datetime.fromisoformat(doc["since"])
    rows = {row["service"]: row for row in doc["services"]}
    assert [row["service"] for row in doc["services"]] == ["batch", "checkout", "frontend"]

    def measured(row: dict[str, Any]) -> dict[str, Any]:
        keys = ("requests", "errors", "error_rate", "p50_ns", "p95_ns", "p99_ns", "spans")
        return {k: row[k] for k in (*keys, "measured_by")}  # the fields expected() gives

    def expected(
        requests: int, errors: int, durations_ms: Sequence[int], spans: int, measured_by: str
    ) -> dict[str, Any]:
        p50, p95, p99 = quantiles_ns(d * MS for d in durations_ms)
        return {
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests,
            "p50_ns": p50,
            "p95_ns": p95,
            "p99_ns": p99,
            "spans": spans,
            "measured_by": measured_by,
        }

    checkout = rows["checkout"]
    assert checkout["error_rate"] == 0.2
    assert measured(checkout) == expected(10, 2, CHECKOUT_MS, 10, "server_spans")
    frontend = rows["frontend"]
    # The frontend's CLIENT spans are not its requests: only its SERVER spans are measured.
    assert measured(frontend) == expected(10, 0, FRONTEND_MS, 20, "server_spans")
    batch = rows["batch"]
    # No SERVER or CONSUMER spans: the root spans are the requests, not their children.
    assert measured(batch) == expected(4, 1, JOB_MS, 8, "root_spans")

    # The rate is over the window (one hour by default).
    assert checkout["request_rate"] == pytest.approx(10 / 3600, rel=1e-3)
    assert batch["request_rate"] == pytest.approx(4 / 3600, rel=1e-3)
    # Last seen: the latest end of any span of the service.
    last = len(CHECKOUT_MS) - 1
    assert_iso(frontend["last_seen"], shop.request_starts[last] + FRONTEND_MS[last] * MS)
    assert_iso(checkout["last_seen"], shop.request_starts[last] + (CHECKOUT_MS[last] + 5) * MS)
    assert_iso(batch["last_seen"], shop.job_starts[-1] + JOB_MS[-1] * MS)


def test_services_since_leaves_out_older_spans(daemon: RunningDaemon) -> None:
    send_shop(daemon)  # everything started 120 s to 100 s ago
    assert cli_json("services", "--since", "30s")["services"] == []
    five_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    iso = five_minutes_ago.strftime("%Y-%m-%dT%H:%M:%S")  # an ISO time without a zone is UTC
    assert len(cli_json("services", "--since", iso)["services"]) == 3
    with_zone = cli_json("services", "--since", iso + "Z")
    assert with_zone["since"] == cli_json("services", "--since", iso)["since"]
    assert dt.datetime.fromisoformat(with_zone["since"]) == five_minutes_ago.replace(microsecond=0)
    assert [row["service"] for row in cli_json("services", "--since", "5m")["services"]] == [
        "batch",
        "checkout",
        "frontend",
    ]


def test_services_table_for_people(daemon: RunningDaemon) -> None:
    send_shop(daemon)
    text = cli_text("services")
    assert "checkout" in text and "frontend" in text and "batch" in text
    assert "20.0%" in text  # checkout's error rate
    assert "measured by their root spans" in text


SERVICE_FIELDS = {
    "service",
    "requests",
    "request_rate",
    "errors",
    "error_rate",
    "p50_ns",
    "p95_ns",
    "p99_ns",
    "spans",
    "measured_by",
    "last_seen",
}


def unix_ns_of(iso: str) -> int:
    """Nanoseconds since the epoch of an API time (microsecond resolution)."""
    moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000


def shop_requests(shop: Shop) -> dict[str, list[tuple[int, bool]]]:
    """Each service's requests as sent: (start, failed)."""
    return {
        "frontend": [(t, False) for t in shop.request_starts],
        # The checkout SERVER span starts 5 ms into the request.
        "checkout": [(t + 5 * MS, i in FAILED) for i, t in enumerate(shop.request_starts)],
        # No SERVER spans: the batch service is measured by its root spans, the jobs.
        "batch": [(t, j in FAILED_JOBS) for j, t in enumerate(shop.job_starts)],
    }


def test_services_rate_points_per_step_from_the_same_requests(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)  # 120 s to 100 s ago
    plain = daemon.api.services(ServicesQuery("5m"))
    # Without a step the answer is as it always was.
    assert set(plain) == {"since", "services"}
    assert all(set(row) == SERVICE_FIELDS for row in plain["services"])

    doc = daemon.api.services(ServicesQuery("5m", "10s"))
    assert set(doc) == {"since", "step_ns", "services"}
    assert doc["step_ns"] == 10 * S
    since_ns = unix_ns_of(doc["since"])
    steps = 30  # a 5 minute window in steps of 10 s
    for row, before in zip(doc["services"], plain["services"], strict=True):
        assert set(row) == SERVICE_FIELDS | {"rate_points"}
        # The other fields are those of the plain answer (the rate's window moved on a little).
        assert {k: v for k, v in row.items() if k not in ("request_rate", "rate_points")} == {
            k: v for k, v in before.items() if k != "request_rate"
        }
        counts = [0] * steps
        failures = [0] * steps
        for start, failed in shop_requests(shop)[row["service"]]:
            counts[(start - since_ns) // (10 * S)] += 1
            failures[(start - since_ns) // (10 * S)] += failed
        assert [unix_ns_of(p["time"]) for p in row["rate_points"]] == [
            since_ns + i * 10 * S for i in range(steps)
        ]
        assert [p["rate"] for p in row["rate_points"]] == [c / 10 for c in counts]
        assert [p["error_rate"] for p in row["rate_points"]] == [
            f / c if c else 0.0 for f, c in zip(failures, counts, strict=True)
        ]
        assert sum(counts) == row["requests"]
    checkout = next(row for row in doc["services"] if row["service"] == "checkout")
    assert max(p["error_rate"] for p in checkout["rate_points"]) > 0

    # A step that does not divide the window: the last step is 6 s long, and its rate is
    # over those 6 s. The rates times the lengths of their steps are the requests.
    odd = daemon.api.services(ServicesQuery("5m", "7s"))
    for row in odd["services"]:
        points = row["rate_points"]
        assert len(points) == 43
        seconds = [7.0] * 42 + [6.0]
        assert sum(p["rate"] * s for p, s in zip(points, seconds, strict=True)) == pytest.approx(
            row["requests"]
        )


# ---------------------------------------------------------------------------------------------
# traces


def test_traces_newest_first_with_root_duration_spans_and_services(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)
    rows = without_start(trace_rows(), shop)
    expected = [shop.job_row(j) for j in reversed(range(len(JOB_MS)))] + [
        shop.request_row(i) for i in reversed(range(len(CHECKOUT_MS)))
    ]
    assert rows == expected


def test_traces_filters(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)
    requests = [shop.request_row(i) for i in reversed(range(len(CHECKOUT_MS)))]
    jobs = [shop.job_row(j) for j in reversed(range(len(JOB_MS)))]

    def rows(*args: str) -> list[dict[str, Any]]:
        return without_start(trace_rows(*args), shop)

    # A trace matches when one of its spans does; the row still describes the whole trace.
    assert rows("--service", "checkout") == requests
    assert rows("-s", "batch") == jobs
    assert rows("--name", "POST /pay") == requests
    assert rows("--name", "compact files") == jobs
    assert rows("--name", "no such span") == []
    assert rows("--service", "frontend", "--name", "compact files") == []

    assert rows("--min-duration", "60ms", "--max-duration", "0.5s") == [
        shop.request_row(i) for i in (9, 7, 4)
    ]
    assert rows("--max-duration", "30ms") == [shop.request_row(i) for i in (5, 0)]
    assert rows("--min-duration", "1.5s") == [shop.job_row(j) for j in (3, 2, 1)]

    assert rows("--status", "error") == [shop.job_row(1), shop.request_row(7), shop.request_row(3)]
    assert rows("--status", "ok") == [row for row in jobs + requests if not row["error"]]

    # A span attribute, a typed (integer) span attribute, and a resource attribute.
    assert rows("--attr", "customer.tier=gold") == [shop.request_row(i) for i in (8, 6, 4, 2, 0)]
    assert rows("--attr", "http.response.status_code=500") == [shop.request_row(i) for i in (7, 3)]
    assert rows("--attr", "deployment.environment.name=staging") == jobs
    assert rows("--attr", "deployment.environment.name=prod") == requests
    # Repeated filters must all hold on one span (as in Jaeger): an attribute of the checkout
    # span with one of its resource, or two of its own; not one from each of two spans.
    assert rows("--attr", "customer.tier=gold", "--attr", "deployment.environment.name=prod") == [
        shop.request_row(i) for i in (8, 6, 4, 2, 0)
    ]
    assert rows("--attr", "customer.tier=silver", "--attr", "http.response.status_code=200") == [
        shop.request_row(i) for i in (9, 5, 1)
    ]
    assert rows("--attr", "customer.tier=gold", "--attr", "http.route=/checkout") == []
    assert rows("--service", "checkout", "--attr", "customer.tier=silver", "--status", "error") == [
        shop.request_row(i) for i in (7, 3)
    ]

    assert rows("--limit", "3") == jobs[:3]
    assert rows("--service", "checkout", "--limit", "2") == requests[:2]


def test_traces_duration_bounds_are_inclusive(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)

    def rows(*args: str) -> list[dict[str, Any]]:
        return without_start(trace_rows(*args), shop)

    # Requests 9 and 4 last exactly 70 ms and 100 ms.
    assert rows("--min-duration", "70ms", "--max-duration", "100ms") == [
        shop.request_row(i) for i in (9, 4)
    ]
    # Job 3 lasts exactly 4.1 s: both bounds at 4.1s keep it.
    assert rows("--min-duration", "4.1s") == [shop.job_row(3)]
    assert rows("--min-duration", "4s", "--max-duration", "4.1s") == [shop.job_row(3)]


def api_trace_rows(daemon: RunningDaemon, **params: Any) -> list[dict[str, Any]]:
    """``GET /traces`` with ``params`` (TraceQuery's fields; ``attr`` one filter): the rows."""
    if isinstance(params.get("attr"), str):
        params["attr"] = (params["attr"],)
    doc = daemon.api.traces(TraceQuery(**params))
    assert set(doc) == {"since", "traces"}
    return list(doc["traces"])


def test_traces_sorted_by_duration_slowest_first(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)
    requests = [shop.request_row(i) for i in range(len(CHECKOUT_MS))]
    jobs = [shop.job_row(j) for j in range(len(JOB_MS))]

    def rows(**params: Any) -> list[dict[str, Any]]:
        return without_start(api_trace_rows(daemon, sort="duration", **params), shop)

    def slowest(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(candidates, key=lambda row: -row["duration_ns"])

    assert rows() == slowest(jobs + requests)
    assert rows(limit=3) == slowest(jobs)[:3]
    # Ranked by the whole trace's duration, not by the matching checkout span's.
    assert rows(service="checkout") == slowest(requests)
    assert rows(service="checkout", limit=2) == [shop.request_row(7), shop.request_row(4)]
    assert rows(status="error") == [shop.job_row(1), shop.request_row(7), shop.request_row(3)]
    assert rows(min_duration="50ms", max_duration="1.5s") == [
        shop.job_row(1),
        shop.job_row(0),
        *(shop.request_row(i) for i in (7, 4, 9, 1)),
    ]
    assert rows(attr="customer.tier=silver", limit=2) == [shop.request_row(i) for i in (7, 9)]
    assert rows(name="no such span") == []
    # sort=start is the default order: newest first.
    assert api_trace_rows(daemon, sort="start") == api_trace_rows(daemon)


RELAY_SEQUENTIAL = 0x5E0000000000000000000000000000AA
RELAY_LONG = 0x5E0000000000000000000000000000BB


def test_traces_by_duration_find_traces_longer_than_any_of_their_spans(
    daemon: RunningDaemon,
) -> None:
    """The traces that candidates taken from the longest spans (four per row asked for)
    would miss: each is slower than the five traces of 40 ms, but its spans are shorter."""
    singles = [RELAY_SEQUENTIAL + 0x100 + i for i in range(5)]
    sender = span_sender(
        daemon,
        "relay",
        grpc_spans(daemon),
        ids=ChosenTraceIds(RELAY_SEQUENTIAL, RELAY_SEQUENTIAL, RELAY_LONG, *singles),
    )
    t = time.time_ns() - 60 * S
    # Two 30 ms spans one after the other, no root covering them: a 70 ms trace.
    make_span(sender.tracer, "hop", t, t + 30 * MS)
    make_span(sender.tracer, "hop", t + 40 * MS, t + 70 * MS)
    # A 500 ms trace whose only "hop" span lasts 1 ms.
    slow = make_span(sender.tracer, "wait", t, t + 500 * MS)
    make_span(sender.tracer, "hop", t + 10 * MS, t + 11 * MS, parent=slow)
    # Five traces of one 40 ms "hop" each: the longest hops of all.
    for i in range(len(singles)):
        make_span(sender.tracer, "hop", t + (i + 1) * S, t + (i + 1) * S + 40 * MS)
    sender.close()

    def slowest(**params: Any) -> list[tuple[str, int, int]]:
        rows = api_trace_rows(daemon, sort="duration", **params)
        return [(row["trace_id"], row["duration_ns"], row["spans"]) for row in rows]

    assert slowest(name="hop", limit=1) == [(format(RELAY_LONG, "032x"), 500 * MS, 2)]
    assert slowest(service="relay", max_duration="100ms", limit=1) == [
        (format(RELAY_SEQUENTIAL, "032x"), 70 * MS, 2)
    ]
    # The rest: the 40 ms traces, newest first among equals.
    assert slowest(service="relay") == [
        (format(RELAY_LONG, "032x"), 500 * MS, 2),
        (format(RELAY_SEQUENTIAL, "032x"), 70 * MS, 2),
        *((format(trace_id, "032x"), 40 * MS, 1) for trace_id in reversed(singles)),
    ]


def test_traces_table_for_people(daemon: RunningDaemon) -> None:
    shop = send_shop(daemon)
    text = cli_text("traces", "--service", "checkout", "--status", "error")
    assert shop.request_ids[7][:16] in text and shop.request_ids[3][:16] in text
    assert shop.request_ids[0][:16] not in text
    # 80 columns wrap the root cell ("frontend GET /checkout ✗ error") over lines.
    assert "frontend" in text and "/checkout" in text and "✗" in text


# ---------------------------------------------------------------------------------------------
# trace: one trace of known shape


def test_trace_json_spans_parent_links_events_and_critical_path(daemon: RunningDaemon) -> None:
    known = send_known_trace(daemon)
    doc = cli_json("trace", known.trace_id)

    assert doc["trace_id"] == known.trace_id
    assert doc["start_ns"] == known.start_ns
    assert_iso(doc["start"], known.start_ns)
    assert doc["duration_ns"] == 100 * MS
    assert doc["services"] == ["api"]
    assert doc["error"] is True
    # The root waited for charge card, and before it for load cart and its query; audit log
    # ran beside charge card and cost nothing.
    assert doc["critical_path"] == [
        span_hex(known.root),
        span_hex(known.charge),
        span_hex(known.cart),
        span_hex(known.query),
    ]

    # name, parent, kind, status, start and end in ms from the trace start
    shape = [
        ("GET /order", None, "SERVER", "UNSET", 0, 100),
        ("load cart", known.root, "INTERNAL", "UNSET", 5, 35),
        ("SELECT cart", known.cart, "CLIENT", "UNSET", 10, 30),
        ("charge card", known.root, "CLIENT", "ERROR", 40, 95),
        ("audit log", known.root, "INTERNAL", "UNSET", 50, 60),
    ]
    spans = doc["spans"]
    assert len(spans) == len(shape)  # the neighbour trace's span is not here
    assert [s["span_id"] for s in spans] == [
        span_hex(s) for s in (known.root, known.cart, known.query, known.charge, known.audit)
    ]
    for span, (name, parent, kind, status, start_ms, end_ms) in zip(spans, shape, strict=True):
        assert span["name"] == name
        assert span["parent_span_id"] == (span_hex(parent) if parent is not None else None)
        assert span["service_name"] == "api"
        assert span["kind"] == kind
        assert span["status_code"] == status
        assert span["start_ns"] == known.start_ns + start_ms * MS
        assert span["end_ns"] == known.start_ns + end_ms * MS
        assert span["duration_ns"] == (end_ms - start_ms) * MS
        assert_iso(span["start"], span["start_ns"])
        assert span["resource_attributes"]["service.name"] == "api"
        assert span["scope_name"] == "shop.api"
        assert span["scope_version"] == "1.0.0"
        assert span["links"] == []

    by_name = {s["name"]: s for s in spans}
    assert by_name["charge card"]["status_message"] == "card declined"
    assert by_name["GET /order"]["attributes"] == {"http.route": "/order"}
    assert by_name["SELECT cart"]["attributes"] == {"db.system.name": "postgresql"}

    (exception,) = by_name["SELECT cart"]["events"]
    assert exception["name"] == "exception"
    assert exception["time_ns"] == known.start_ns + 20 * MS
    assert exception["attributes"]["exception.type"] == "TimeoutError"
    assert exception["attributes"]["exception.message"] == "db timeout, retrying"
    assert by_name["charge card"]["events"] == [
        {
            "time_ns": known.start_ns + 41 * MS,
            "name": "gateway.request",
            "attributes": {"gateway": "stripe", "attempt": 1},
        }
    ]
    for name in ("GET /order", "load cart", "audit log"):
        assert by_name[name]["events"] == []


def test_trace_by_unique_prefix(daemon: RunningDaemon) -> None:
    known = send_known_trace(daemon)
    assert known.trace_id[:8] == "4bf92f35"
    by_prefix = cli_json("trace", known.trace_id[:8])
    assert by_prefix == cli_json("trace", known.trace_id)
    assert cli_json("trace", known.trace_id[:8].upper())["trace_id"] == known.trace_id

    # Seven digits are the start of both traces: that is said, with both ids, not guessed.
    result = ophion("trace", "4bf92f3")
    assert_clean_failure(result, 1)
    assert "several" in result.stderr
    assert known.trace_id in result.stderr
    assert format(NEIGHBOUR_TRACE, "032x") in result.stderr


def test_trace_unknown_id_says_so(daemon: RunningDaemon) -> None:
    send_known_trace(daemon)
    result = ophion("trace", "0123456789abcdef0123456789abcdef")
    assert_clean_failure(result, 1)
    assert result.stderr.splitlines()[0].startswith("error: no trace 0123456789abcdef")
    assert "ophion traces" in result.stderr  # the hint


def test_trace_span_option_keeps_that_subtree(daemon: RunningDaemon) -> None:
    known = send_known_trace(daemon)
    doc = cli_json("trace", known.trace_id, "--span", span_hex(known.cart))
    assert [s["span_id"] for s in doc["spans"]] == [span_hex(known.cart), span_hex(known.query)]
    assert doc["trace_id"] == known.trace_id
    # A unique start of the span id is enough.
    leaf = cli_json("trace", known.trace_id[:8], "--span", span_hex(known.charge)[:8])
    assert [s["name"] for s in leaf["spans"]] == ["charge card"]
    whole = cli_json("trace", known.trace_id, "--span", span_hex(known.root))
    assert len(whole["spans"]) == 5

    result = ophion("trace", known.trace_id, "--span", "ffffffffffffffff")
    assert_clean_failure(result, 1)
    assert "no span ffffffffffffffff" in result.stderr


def test_trace_waterfall_for_people(daemon: RunningDaemon) -> None:
    known = send_known_trace(daemon)
    text = cli_text("trace", known.trace_id)
    assert known.trace_id in text
    for name in ("GET /order", "load cart", "SELECT cart", "charge card", "audit log"):
        assert name in text, text
    assert "✗" in text
    assert "db timeout, retrying" in text
    assert "TimeoutError" in text
    # The error mark is on the failed span's line, and on no other span's.
    marked = [line for line in text.splitlines() if "✗" in line and "|" in line]
    assert len(marked) == 1 and "charge card" in marked[0]

    focused = cli_text("trace", known.trace_id, "--span", span_hex(known.charge))
    assert f"span {span_hex(known.charge)}" in focused
    assert "status: card declined" in focused
    assert "load cart" not in focused


# ---------------------------------------------------------------------------------------------
# logs


def log_bodies(*args: str) -> list[str]:
    doc = cli_json("logs", *args)
    assert set(doc) == {"logs"}
    return [record["body"] for record in doc["logs"]]


def bodies(records: Iterable[Record]) -> list[str]:
    return [r.body for r in records]


def test_logs_records_field_by_field_oldest_first(daemon: RunningDaemon) -> None:
    base = time.time_ns() - 60 * S
    send_records(daemon, RECORDS, base)
    records = cli_json("logs")["logs"]
    assert [r["body"] for r in records] == bodies(RECORDS)
    warn = records[3]
    assert_iso(warn["time"], base + 3 * S)
    assert {k: v for k, v in warn.items() if k != "time"} == {
        "time_ns": base + 3 * S,
        "service": "api",
        "severity_number": 13,
        "severity": "WARN",
        "body": "Payment retry scheduled",
        "body_type": "string",
        "trace_id": format(TRACE_ONE, "032x"),
        "span_id": format(SPAN_ONE, "016x"),
        "attributes": {"seq": 3},
    }
    crashed = records[5]
    assert (crashed["service"], crashed["severity_number"], crashed["severity"]) == (
        "worker",
        21,
        "FATAL",
    )
    assert crashed["trace_id"] is None and crashed["span_id"] is None


def test_logs_filters(daemon: RunningDaemon) -> None:
    base = time.time_ns() - 60 * S
    send_records(daemon, RECORDS, base)

    # warn and above: WARN, WARN2, ERROR, FATAL; not TRACE, DEBUG or INFO.
    warn_and_above = [r for r in RECORDS if r.severity.value >= SeverityNumber.WARN.value]
    assert log_bodies("--severity", "warn") == bodies(warn_and_above)
    assert bodies(warn_and_above) == [
        "Payment retry scheduled",
        "payment FAILED for order 17",
        "worker crashed",
        "disk almost full",
    ]
    assert log_bodies("--severity", "WARNING") == bodies(warn_and_above)
    assert log_bodies("--severity", "error") == ["payment FAILED for order 17", "worker crashed"]
    assert log_bodies("--severity", "fatal") == ["worker crashed"]
    assert log_bodies("--severity", "trace") == bodies(RECORDS)

    # --grep ignores case.
    assert log_bodies("--grep", "payment") == [
        "Payment retry scheduled",
        "payment FAILED for order 17",
    ]
    assert log_bodies("-g", "FAILED") == log_bodies("--grep", "failed")
    assert log_bodies("--grep", "100%") == []  # LIKE wildcards are literal text

    one = format(TRACE_ONE, "032x")
    assert log_bodies("--trace", one) == [
        "order 17 accepted",
        "Payment retry scheduled",
        "payment FAILED for order 17",
    ]
    assert log_bodies("--trace", format(TRACE_TWO, "032x")) == ["job done"]
    assert log_bodies("--trace", one[:12]) == log_bodies("--trace", one)

    assert log_bodies("--service", "worker") == [
        "payment FAILED for order 17",
        "worker crashed",
        "job done",
    ]
    assert log_bodies("--service", "api", "--severity", "warn") == [
        "Payment retry scheduled",
        "disk almost full",
    ]
    assert log_bodies("--service", "nobody") == []

    # --limit keeps the newest N, still oldest first.
    assert log_bodies("--limit", "3") == ["worker crashed", "job done", "disk almost full"]
    assert log_bodies("--severity", "warn", "--limit", "2") == [
        "worker crashed",
        "disk almost full",
    ]
    # A window reaching back to 2.5 s after the first record (the seconds since it are
    # counted now, not at the start: the commands above take a while on a busy machine).
    window_ms = (time.time_ns() - base) // 1_000_000 - 2_500
    assert log_bodies("--since", f"{window_ms}ms") == bodies(RECORDS[3:])


def test_logs_for_people(daemon: RunningDaemon) -> None:
    send_records(daemon, RECORDS, time.time_ns() - 60 * S)
    text = cli_text("logs", "--severity", "error")
    assert "payment FAILED for order 17" in text and "worker crashed" in text
    assert "FATAL" in text and "ERROR" in text
    assert "cache probe" not in text


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _as_from_a_terminal() -> None:
    """Give the follower Ctrl-C's default action, as a shell does for the command it runs in
    the foreground. A test run in the background of a script (nohup, ``&``) ignores SIGINT, and
    a child inherits that: Python then leaves SIGINT ignored, and the follower would never see
    the Ctrl-C these tests send (the cause of their failures in background runs under load)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_follow(*args: str) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    """``ophion logs -f --json ARGS`` in a subprocess, and a queue of the lines it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ophion_cli", "logs", "-f", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        preexec_fn=_as_from_a_terminal,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    return process, lines


def _next_line(lines: queue.Queue[str | None], timeout: float) -> str | None:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def _ended_by_ctrl_c(process: subprocess.Popen[str]) -> int:
    """The follower's exit code once the SIGINT sent to it ends it (0.2-0.5 s here, also with
    six busy loops on this 2-core machine; the wait allows for much worse). A follower that
    ignored the signal would run for ever (the daemon's keep-alives keep its read from timing
    out): this fails then, showing what the follower was doing."""
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        where = _stuck_where(process.pid)
        process.kill()
        process.wait()
        stderr = process.stderr.read() if process.stderr else ""
        raise AssertionError(
            f"Ctrl-C did not end the follower in 10 s; stderr: {stderr!r}; {where}"
        ) from None


def _stuck_where(pid: int) -> str:
    """What a process that did not end is doing: its signal state and, with py-spy, its stack."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError as e:
        return f"(no /proc: {e})"
    keys = ("State", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "Threads")
    found = [line for line in status if line.startswith(keys)]
    stack = ""
    if shutil.which("py-spy"):
        dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True)
        stack = dump.stdout + dump.stderr
    return f"status {found}, wchan {wchan!r}, stack:\n{stack}"


# Slow while ophiond takes up to 5 s to stop with a stream open (see the stop test).
@pytest.mark.slow
def test_logs_follow_prints_records_sent_after_it_started(daemon: RunningDaemon) -> None:
    base = time.time_ns() - 10 * S
    send_records(daemon, [Record(0, "api", SeverityNumber.INFO, "INFO", "before follow")], base)
    process = subprocess.Popen(
        [sys.executable, "-m", "ophion_cli", "logs", "-f", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ),  # OPHION_HOME of this test
        preexec_fn=_as_from_a_terminal,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        # The backlog comes first: once it is printed, the follower is subscribed.
        first = _next_line(lines, 15)
        assert first is not None, "the follower printed no backlog within 15 s"
        backlog = json.loads(first)
        assert backlog["body"] == "before follow"

        sent_at = time.time_ns()
        send_records(
            daemon,
            [Record(0, "worker", SeverityNumber.ERROR, "ERROR", "after follow")],
            sent_at,
            transport="http",
        )
        line = _next_line(lines, 5)
        assert line is not None, "the new record did not arrive within 5 s"
        record = json.loads(line)
        assert record["body"] == "after follow"
        assert record["service"] == "worker"
        assert record["severity"] == "ERROR"
        assert record["severity_number"] == 17
        assert record["time_ns"] == sent_at
        assert_iso(record["time"], sent_at)

        # Ctrl-C ends it cleanly.
        process.send_signal(signal.SIGINT)
        assert _ended_by_ctrl_c(process) == 0
        assert process.stderr is not None
        stderr = process.stderr.read()
        assert "Traceback" not in stderr, stderr
        assert "KeyboardInterrupt" not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# Slow while ophiond takes up to 5 s to stop with a stream open (see the stop test).
@pytest.mark.slow
def test_logs_follow_applies_the_filters_to_live_records(daemon: RunningDaemon) -> None:
    base = time.time_ns() - 10 * S
    send_records(
        daemon,
        [
            Record(0, "api", SeverityNumber.INFO, "INFO", "old info"),
            Record(1, "api", SeverityNumber.ERROR, "ERROR", "old error"),
        ],
        base,
    )
    process, lines = _start_follow("--severity", "error")
    try:
        first = _next_line(lines, 15)
        assert first is not None and json.loads(first)["body"] == "old error"
        send_records(
            daemon,
            [
                Record(0, "api", SeverityNumber.INFO, "INFO", "live info"),
                Record(1, "api", SeverityNumber.ERROR, "ERROR", "live error"),
            ],
            time.time_ns(),
        )
        line = _next_line(lines, 5)
        assert line is not None, "the error record did not arrive within 5 s"
        assert json.loads(line)["body"] == "live error"
        assert _next_line(lines, 0.3) is None  # the info record was filtered out
        process.send_signal(signal.SIGINT)
        assert _ended_by_ctrl_c(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# Slow while ophiond takes up to 5 s to stop with a stream open (see the stop test).
@pytest.mark.slow
def test_logs_follow_ends_when_the_daemon_stops(daemon: RunningDaemon) -> None:
    send_records(daemon, [Record(0, "api", SeverityNumber.INFO, "INFO", "backlog")], time.time_ns())
    process, lines = _start_follow()
    try:
        first = _next_line(lines, 15)
        assert first is not None and json.loads(first)["body"] == "backlog"
        # Stopping the daemon ends the stream at once: neither side waits for a keep-alive.
        started = time.monotonic()
        assert daemon.stop() == 0
        stopped_in = time.monotonic() - started
        assert process.wait(5) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
        assert stopped_in < 2.5, f"ophiond took {stopped_in:.1f} s to stop with a follower"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------
# The API client's open streams (what the TUI's log tail reads)


class StreamReader:
    """Iterates an :class:`ApiStream` in a thread of its own, as a TUI worker does."""

    def __init__(self, stream: ApiStream) -> None:
        self.documents: queue.Queue[dict[str, Any]] = queue.Queue()
        self.errors: list[OphionError] = []
        self.ended = threading.Event()
        self._stream = stream
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for document in self._stream:
                self.documents.put(document)
        except OphionError as e:
            self.errors.append(e)
        finally:
            self.ended.set()

    def next_body(self, timeout: float) -> str:
        return str(self.documents.get(timeout=timeout)["body"])


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_open_stream_closed_from_another_thread_unblocks_its_reader(
    daemon_factory: Any, transport: str
) -> None:
    daemon = daemon_factory("--api-listen", "127.0.0.1:0")
    # Over TCP, the client sends this user's own daemon its admin token.
    client = daemon.api if transport == "unix" else connect(f"http://{daemon.listen['api_tcp']}")
    send_records(daemon, [Record(0, "api", SeverityNumber.INFO, "INFO", "backlog")], time.time_ns())

    stream = client.follow_logs(LogQuery("5m"))
    reader = StreamReader(stream)
    assert reader.next_body(10) == "backlog"
    live = [Record(0, "worker", SeverityNumber.WARN, "WARN", "live")]
    send_records(daemon, live, time.time_ns(), transport="http")
    assert reader.next_body(10) == "live"

    time.sleep(0.3)  # the reader now waits for the next line (a keep-alive is 5 s away)
    assert not reader.ended.is_set()
    started = time.monotonic()
    stream.close()
    assert reader.ended.wait(5), "close() did not unblock the reader"
    assert time.monotonic() - started < 1.0
    assert reader.errors == []  # closing is not a failure
    assert list(stream) == []  # and a closed stream stays ended
    stream.close()  # a second close changes nothing


def test_open_stream_says_when_the_daemon_hangs(daemon: RunningDaemon) -> None:
    stream = daemon.api.follow_logs(LogQuery(), read_timeout=1.0)
    reader = StreamReader(stream)
    os.kill(daemon.process.pid, signal.SIGSTOP)  # hung: not even keep-alives
    try:
        assert reader.ended.wait(10), "the read timeout did not end the stream"
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
    (error,) = reader.errors
    assert isinstance(error, DaemonNotRunning)
    assert error.message.startswith("ophiond sent nothing for 1 s on "), error.message
    assert "keep-alive" in error.message and error.hint


def test_open_stream_rejects_bad_parameters_before_it_opens(daemon: RunningDaemon) -> None:
    with pytest.raises(InvalidParameter, match="not a severity"):
        daemon.api.follow_logs(LogQuery(severity="loud"))


# Slow: it waits for a keep-alive, which comes after 5 s of quiet.
@pytest.mark.slow
def test_open_stream_keep_alives_hold_off_the_read_timeout(daemon: RunningDaemon) -> None:
    stream = daemon.api.follow_logs(LogQuery(), read_timeout=6.5)
    reader = StreamReader(stream)
    # Nothing is sent: without the keep-alive line (at 5 s, never shown) the read would have
    # timed out at 6.5 s; after it, not before 11.5 s.
    assert not reader.ended.wait(8.0), reader.errors
    assert reader.documents.empty()
    stream.close()
    assert reader.ended.wait(5) and reader.errors == []


# ---------------------------------------------------------------------------------------------
# metrics


def test_metrics_list_names_types_units_services_series(daemon: RunningDaemon) -> None:
    send_shop_metrics(daemon)
    doc = cli_json("metrics")
    dt.datetime.fromisoformat(doc["since"])
    listed = [
        {k: row[k] for k in ("name", "type", "unit", "services", "series")}
        for row in doc["metrics"]
    ]
    assert listed == [
        {
            "name": "shop.latency",
            "type": "histogram",
            "unit": "ms",
            "services": ["shop"],
            "series": 2,
        },
        {
            "name": "shop.orders",
            "type": "sum",
            "unit": "{order}",
            "services": ["shop"],
            "series": 1,
        },
        {
            "name": "shop.queue.depth",
            "type": "gauge",
            "unit": "{message}",
            "services": ["shop"],
            "series": 1,
        },
        {
            "name": "shop.refunds",
            "type": "sum",
            "unit": "{refund}",
            "services": ["shop"],
            "series": 1,
        },
    ]
    orders = next(row for row in doc["metrics"] if row["name"] == "shop.orders")
    assert orders["description"] == "Orders placed"
    assert orders["last_seen"] is not None

    text = cli_text("metrics")
    for name in ("shop.latency", "shop.orders", "shop.queue.depth", "shop.refunds"):
        assert name in text


@pytest.mark.parametrize(
    ("name", "increments"),
    [("shop.orders", [3.0, 5.0]), ("shop.refunds", [2.0, 4.0])],
    ids=["cumulative", "delta"],
)
def test_metric_counter_is_a_rate_per_step(
    daemon: RunningDaemon, name: str, increments: list[float]
) -> None:
    sent = send_shop_metrics(daemon)
    doc = cli_json("metrics", name, "--step", "1s")
    assert doc["name"] == name
    assert doc["type"] == "sum"
    assert doc["step_ns"] == S
    (series,) = doc["series"]
    assert series["service"] == "shop"
    assert series["attributes"] == {}
    assert series["kind"] == "rate"
    times = sent.times(name)
    assert len(times) == 2
    # One point per collection; a 1 s step makes the rate equal to what was added in it.
    assert series["points"] == [
        {"time": whole_second_iso(t), "value": v} for t, v in zip(times, increments, strict=True)
    ]


def test_metric_histogram_gives_quantiles_per_step(daemon: RunningDaemon) -> None:
    sent = send_shop_metrics(daemon)
    doc = cli_json("metrics", "shop.latency", "--step", "1s")
    assert (doc["type"], doc["unit"], doc["step_ns"]) == ("histogram", "ms", S)
    series = {s["attributes"]["http.route"]: s for s in doc["series"]}
    assert set(series) == {"/pay", "/cart"}
    assert all(s["kind"] == "quantiles" for s in series.values())

    pay = series["/pay"]["points"]
    first, second = sent.times("shop.latency", {"http.route": "/pay"})
    assert [p["time"] for p in pay] == [whole_second_iso(first), whole_second_iso(second)]
    for point in pay:
        assert set(point) == {"time", "count_rate", "p50", "p95", "p99"}
    # First step: 5 | 20 30 50 | 200 in the buckets (0,10] (10,100] (100,1000], interpolated
    # linearly inside the bucket holding the rank.
    assert pay[0]["count_rate"] == 5.0
    assert pay[0]["p50"] == pytest.approx(10 + 90 * (2.5 - 1) / 3)
    assert pay[0]["p95"] == pytest.approx(100 + 900 * (4.75 - 4) / 1)
    assert pay[0]["p99"] == pytest.approx(100 + 900 * (4.95 - 4) / 1)
    # Second step: only the two new observations (40, 60), both in (10, 100].
    assert pay[1]["count_rate"] == 2.0
    assert pay[1]["p50"] == pytest.approx(10 + 90 * 1 / 2)
    assert pay[1]["p95"] == pytest.approx(10 + 90 * 1.9 / 2)
    assert pay[1]["p99"] == pytest.approx(10 + 90 * 1.98 / 2)

    cart = series["/cart"]["points"]
    assert cart[0]["count_rate"] == 1.0
    assert cart[0]["p50"] == pytest.approx(100 + 900 * 0.5)
    # Nothing observed in the second step: no quantiles to show.
    assert cart[1]["count_rate"] == 0.0
    assert (cart[1]["p50"], cart[1]["p95"], cart[1]["p99"]) == (None, None, None)


def test_metric_gauge_gives_values(daemon: RunningDaemon) -> None:
    sent = send_shop_metrics(daemon)
    doc = cli_json("metrics", "shop.queue.depth", "--step", "1s")
    assert (doc["type"], doc["unit"]) == ("gauge", "{message}")
    (series,) = doc["series"]
    assert series["kind"] == "value"
    first, second = sent.times("shop.queue.depth")
    assert series["points"] == [
        {"time": whole_second_iso(first), "value": 9.0},
        {"time": whole_second_iso(second), "value": 7.0},
    ]
    only_shop = cli_json("metrics", "shop.queue.depth", "--service", "shop", "--step", "1s")
    assert only_shop["series"] == doc["series"]


def test_metric_unknown_name_says_so(daemon: RunningDaemon) -> None:
    send_shop_metrics(daemon)
    result = ophion("metrics", "shop.nothing")
    assert_clean_failure(result, 1)
    assert "no points of metric 'shop.nothing'" in result.stderr
    assert "ophion metrics" in result.stderr


# ---------------------------------------------------------------------------------------------
# map


def test_map_edges_with_calls_errors_and_p95(daemon: RunningDaemon) -> None:
    send_shop(daemon)
    doc = cli_json("map")
    dt.datetime.fromisoformat(doc["since"])
    assert doc["services"] == ["batch", "checkout", "frontend"]
    # Only the frontend -> checkout call crosses services; batch calls nobody.
    assert doc["edges"] == [
        {
            "source": "frontend",
            "target": "checkout",
            "calls": 10,
            "errors": 2,
            "error_rate": 0.2,
            "p95_ns": quantiles_ns(d * MS for d in CHECKOUT_MS)[1],
        }
    ]
    # The real entry point prints the same document.
    result = ophion("map", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["edges"] == doc["edges"]
    text = cli_text("map")
    assert "frontend" in text and "checkout" in text
    assert "10 calls" in text and "20.0% errors" in text


# ---------------------------------------------------------------------------------------------
# Usage errors and a missing daemon


@pytest.mark.parametrize(
    ("args", "option", "forms"),
    [
        (("services", "--since", "yesterday"), "--since", ["15m", "ISO"]),
        (("traces", "--since", "yesterday"), "--since", ["15m", "ISO"]),
        (("logs", "--since", "yesterday"), "--since", ["15m", "ISO"]),
        (("logs", "-f", "--since", "yesterday"), "--since", ["15m", "ISO"]),
        (("metrics", "--since", "yesterday"), "--since", ["15m", "ISO"]),
        (("map", "--since", "yesterday"), "--since", ["15m", "ISO"]),
        (("traces", "--min-duration", "fast"), "--min-duration", ["250ms", "1.5s"]),
        (("traces", "--max-duration", "10 parsecs"), "--max-duration", ["250ms", "1.5s"]),
        (("metrics", "shop.orders", "--step", "often"), "--step", ["250ms", "1.5s"]),
        (("traces", "--status", "maybe"), "--status", ["ok", "error"]),
        (("traces", "--attr", "no-equals-sign"), "--attr", ["KEY=VALUE"]),
        (("logs", "--severity", "loud"), "--severity", ["warn", "fatal"]),
    ],
)
def test_usage_errors_name_the_accepted_forms(
    args: tuple[str, ...], option: str, forms: list[str]
) -> None:
    # No daemon runs: the arguments are checked before the daemon is asked anything.
    result = ophion(*args)
    assert_clean_failure(result, 2)
    assert option in result.stderr
    for form in forms:
        assert form in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("services",),
        ("traces",),
        ("trace", "4bf92f35"),
        ("logs",),
        ("logs", "-f"),
        ("metrics",),
        ("metrics", "shop.orders"),
        ("map",),
        ("services", "--json"),
    ],
)
def test_without_daemon_one_line_says_so_and_how_to_start_it(args: tuple[str, ...]) -> None:
    result = ophion(*args, timeout=30)
    assert_clean_failure(result, 1)
    first, *rest = result.stderr.splitlines()
    assert first.startswith("error: ophiond is not running"), result.stderr
    assert "ophion daemon start" in result.stderr
    assert len(rest) <= 1  # the reason, and at most one hint line


# ---------------------------------------------------------------------------------------------
# Bad parameters that reach the daemon


def raw_get(daemon: RunningDaemon, target: str) -> tuple[int, dict[str, Any]]:
    """``GET target`` on the API socket without the client: the status and the JSON body."""
    import http.client
    import socket as socket_module

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
            self.sock.connect(str(daemon.home / "state" / "api.sock"))

    conn = UnixConnection("localhost", timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_bad_parameter_on_the_log_stream_is_a_clean_400(daemon: RunningDaemon) -> None:
    """Parameters are checked before the stream's headers go out."""
    status, body = raw_get(daemon, "/api/v1/logs/stream?severity=bogus")
    assert status == 400
    assert "not a severity" in body["error"]


def test_bad_step_or_sort_is_a_clear_400(daemon: RunningDaemon) -> None:
    cases = [
        ("/services?step=0s", "step must be longer than 0", "15s"),
        ("/services?step=often", "step: 'often' is not a duration", "250ms"),
        ("/services?step=-5s", "step: '-5s' is not a duration", "250ms"),
        (
            "/services?since=1h&step=1s",
            "a step of 1s cuts the 3600s window into 3600 steps; at most 1000 are served",
            "at least 3.6s",
        ),
        ("/traces?sort=slowest", "sort must be start or duration, not 'slowest'", "slowest"),
    ]
    for query, error, hint in cases:
        status, body = raw_get(daemon, "/api/v1" + query)
        assert (status, body["error"]) == (400, error), query
        assert hint in body["hint"], query


def test_an_attribute_key_with_json_path_syntax_is_refused(daemon: RunningDaemon) -> None:
    result = ophion("traces", "--attr", "*=x")
    assert result.returncode == 1
    assert "cannot be filtered on" in result.stderr and "Traceback" not in result.stderr


def test_a_window_reaching_before_year_one_is_a_usage_error() -> None:
    result = ophion("services", "--since", "200000w")
    assert result.returncode == 2
    assert "before the year 1" in result.stderr and "Traceback" not in result.stderr
