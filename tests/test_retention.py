"""Retention in a running daemon: the disk budget rolls partitions over and drops the oldest."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


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
    daemon = daemon_factory(
        "--retention-max-disk", str(budget), env={"OPHION_HOUSEKEEPING_INTERVAL": "100ms"}
    )
    batches = 0
    deadline = time.monotonic() + 120
    while "retention deleted partition" not in daemon.log():
        assert time.monotonic() < deadline, "retention never deleted a partition"
        _post(daemon, _request(batches))
        batches += 1
    _post(daemon, _request(batches))
    time.sleep(0.5)  # one more housekeeping round

    status = daemon.status()
    assert status["storage"]["partitions"] >= 2
    assert status["storage"]["bytes"] <= budget * 1.3
    names = {row["name"] for row in daemon.sql("SELECT DISTINCT name FROM spans")}
    assert f"batch-{batches}" in names  # the newest data is kept
    assert "batch-0" not in names  # the oldest went first
    assert len(names) < batches + 1
