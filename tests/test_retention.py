"""Retention: the disk budget rolls partitions over and drops the oldest, in the writer and in
a running daemon."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_store import T0, _open, _trace_request

from ophiond.otlp.decode import decode_traces
from ophiond.store.writer import Writer
from ophiond.telemetry import Telemetry


def test_the_disk_budget_holds_after_every_flush_not_only_every_housekeeping_interval(
    tmp_path: Path,
) -> None:
    budget = 4 << 20
    partitions = _open(tmp_path)
    writer = Writer(
        partitions,
        Telemetry(),
        1_000_000,
        budget,
        30 * 86400,  # no scheduled round during the test: the flushes alone keep the budget
        clock=lambda: T0,
        flush_records=1,  # every batch is a flush, and each one passes a partition's share
    )
    writer.start()
    for i in range(30):
        writer.submit(decode_traces(_trace_request(2000, payload=f"{i}-" + "x" * 200))).wait()
    writer.stop()  # every flush and the housekeeping after it have run
    assert len(partitions.partitions) > 2
    assert partitions.total_size() <= budget
    payloads = {
        row[0].split("-")[0]
        for row in partitions.con.execute(
            "SELECT DISTINCT attributes->>'$.payload' FROM spans"
        ).fetchall()
    }
    assert "29" in payloads and "0" not in payloads  # the oldest went first
    partitions.close()


def _request(batch: int, spans: int = 500) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attr = resource_spans.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", "retention"
    scope = resource_spans.scope_spans.add()
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id = (batch * 100_000 + i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"batch-{batch}"
        span.start_time_unix_nano = time.time_ns()
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        payload = span.attributes.add()
        # Distinct text per span so that compression cannot make the budget meaningless.
        payload.key, payload.value.string_value = (
            "payload",
            f"{batch}-{i}-" + "%x" % (i * 7919) * 40,
        )
    return request.SerializeToString()


def _post(daemon: Any, body: bytes) -> None:
    request = urllib.request.Request(
        daemon.http_url("/v1/traces"), data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


@pytest.mark.slow
def test_disk_budget_keeps_the_newest_data(daemon_factory: Any) -> None:
    budget = 8_000_000
    # At the default housekeeping interval (60 s): every flush is followed by retention.
    daemon = daemon_factory("--retention-max-disk", str(budget))
    batches = 0
    deadline = time.monotonic() + 120
    while "retention deleted partition" not in daemon.log():
        assert time.monotonic() < deadline, "retention never deleted a partition"
        _post(daemon, _request(batches))
        batches += 1
    _post(daemon, _request(batches))

    # No waiting for a housekeeping round: the store never passes its budget by more than a
    # flush (partitions are 1 MB here, the smallest share; a flush writes up to 1 MB).
    status = daemon.status()
    assert status["storage"]["partitions"] >= 2
    assert status["storage"]["bytes"] <= budget * 1.3
    names = {row["name"] for row in daemon.sql("SELECT DISTINCT name FROM spans")}
    assert f"batch-{batches}" in names  # the newest data is kept
    assert "batch-0" not in names  # the oldest went first
    assert len(names) < batches + 1
