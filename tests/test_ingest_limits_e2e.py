"""A real ophiond takes a span with a value past the limits: it stores the span with the value
cut and marked, tells the client in ``partial_success``, and goes on storing what comes next.

Before the limits, a 16 MiB attribute was acknowledged and then failed every DuckDB insert (at
its 64 MB memory limit), holding up everything after it. The spans are made and sent by the
real OpenTelemetry SDK and its exporters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
import requests
from conftest import RunningDaemon, ophion
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_bad_input import INVALID_ARGUMENT, assert_still_serving, send_http

from ophiond.otlp.limits import NESTED_MARKER

MiB = 1 << 20
VALUE_LIMIT = 64 << 10  # max_attribute_value_size's default
CUT_NOTE = "1 span: attribute 'blob' longer than 65536 bytes; cut (max_attribute_value_size)"


def sdk_span(name: str, attributes: dict[str, Any]) -> ReadableSpan:
    """One finished span made by the SDK (whose default limits let any value length through)."""
    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "limits-test"}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    with provider.get_tracer("ophion.tests").start_as_current_span(name, attributes=attributes):
        pass
    (span,) = recorder.get_finished_spans()
    provider.shutdown()
    return span


class ResponseRecorder:
    """Stands in for a gRPC exporter's stub and keeps each answer: the SDK reads nothing from a
    successful answer, so a test cannot see ``partial_success`` through it otherwise."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.responses: list[Any] = []

    def Export(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the stub's method
        response = self.stub.Export(*args, **kwargs)
        self.responses.append(response)
        return response


def assert_stored_cut(daemon: RunningDaemon, name: str, sent_bytes: int) -> None:
    rows = daemon.sql(
        f"SELECT attributes->>'$.blob' AS blob, http_route FROM spans WHERE name = '{name}'"
    )
    assert len(rows) == 1, rows
    blob = rows[0]["blob"]
    kept = blob.split("…")[0]
    assert kept == "x" * len(kept) and len(blob.encode()) <= VALUE_LIMIT
    assert blob.endswith(f"…[truncated {sent_bytes - len(kept)} bytes]")
    assert rows[0]["http_route"] == "/upload"  # the rest of the span as sent


def assert_ingest_goes_on(daemon: RunningDaemon, send: Any, name: str) -> None:
    """A normal span sent next is stored, and ``ophion sql`` finds it."""
    assert send([sdk_span(name, {"n": 1})]) == SpanExportResult.SUCCESS
    result = ophion("sql", f"SELECT name FROM spans WHERE name = '{name}'", "--json")
    assert result.returncode == 0, (result.stderr, daemon.log())
    assert json.loads(result.stdout) == [{"name": name}]


def test_grpc_span_with_a_16mib_attribute_is_stored_cut(daemon: RunningDaemon) -> None:
    blob = "x" * (16 * MiB)
    exporter = GrpcSpanExporter(endpoint=daemon.grpc_endpoint, insecure=True, timeout=60)
    recorder = ResponseRecorder(exporter._client)
    exporter._client = recorder
    try:
        span = sdk_span("huge-grpc", {"blob": blob, "http.route": "/upload"})
        assert exporter.export([span]) == SpanExportResult.SUCCESS
        partial = recorder.responses[0].partial_success
        assert (partial.rejected_spans, partial.error_message) == (0, CUT_NOTE)
        assert_stored_cut(daemon, "huge-grpc", len(blob))
        assert_ingest_goes_on(daemon, exporter.export, "after-huge-grpc")
    finally:
        exporter.shutdown()


def test_grpc_span_with_a_16mib_name_is_stored_cut_with_the_rest_of_its_request(
    daemon: RunningDaemon,
) -> None:
    # Before names were bounded, the span was acknowledged, then DuckDB refused the flush and
    # the whole request went to the dead letters.
    name = "n" * (16 * MiB)
    exporter = GrpcSpanExporter(endpoint=daemon.grpc_endpoint, insecure=True, timeout=60)
    recorder = ResponseRecorder(exporter._client)
    exporter._client = recorder
    try:
        spans = [
            sdk_span("before-huge-name", {"n": 1}),
            sdk_span(name, {"http.route": "/upload"}),
            sdk_span("after-huge-name", {"n": 2}),
        ]
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        partial = recorder.responses[0].partial_success
        assert (partial.rejected_spans, partial.error_message) == (
            0,
            "1 span: name longer than 65536 bytes; cut (max_attribute_value_size)",
        )
        rows = daemon.sql(
            "SELECT name, http_route, service_name FROM spans "
            "WHERE service_name = 'limits-test' ORDER BY start_time"
        )
        assert [row["name"] for row in rows[::2]] == ["before-huge-name", "after-huge-name"]
        stored = rows[1]["name"]
        kept = stored.split("…")[0]
        assert kept == "n" * len(kept) and len(stored.encode()) <= VALUE_LIMIT
        assert stored.endswith(f"…[truncated {len(name) - len(kept)} bytes]")
        assert rows[1]["http_route"] == "/upload"  # the rest of the span as sent
        assert daemon.status()["storage"]["dead_letters"]["requests"] == 0
        assert_ingest_goes_on(daemon, exporter.export, "after-huge-name-request")
    finally:
        exporter.shutdown()


def test_http_span_with_a_19mib_attribute_is_stored_cut(daemon: RunningDaemon) -> None:
    blob = "x" * (19 * MiB)  # and a little protobuf around it: within the 20 MiB default
    answers: list[requests.Response] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: answers.append(response))
    exporter = HttpSpanExporter(endpoint=daemon.http_url("/v1/traces"), timeout=60, session=session)
    try:
        span = sdk_span("huge-http", {"blob": blob, "http.route": "/upload"})
        assert exporter.export([span]) == SpanExportResult.SUCCESS
        assert answers[0].status_code == 200
        partial = ExportTraceServiceResponse.FromString(answers[0].content).partial_success
        assert (partial.rejected_spans, partial.error_message) == (0, CUT_NOTE)
        assert_stored_cut(daemon, "huge-http", len(blob))
        assert_ingest_goes_on(daemon, exporter.export, "after-huge-http")
    finally:
        exporter.shutdown()


# ---------------------------------------------------------------------------------------------
# OTLP/JSON nested deeply, decoded in worker processes or in the daemon's own

WORKERS = pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker"])


def json_spans(spans: Sequence[dict[str, Any]]) -> bytes:
    now = time.time_ns()
    for i, span in enumerate(spans, start=1):
        span.update(
            traceId=f"{i:032x}",
            spanId=f"{i:016x}",
            startTimeUnixNano=str(now),
            endTimeUnixNano=str(now + 1000),
        )
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


@WORKERS
def test_json_nested_past_what_can_be_read_is_400(daemon_factory: Any, workers: str) -> None:
    daemon = daemon_factory("--decode-workers", workers)
    body = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = send_http(daemon, body, content_type="application/json")
    assert reply.status == 400
    assert reply.json() == {
        "code": INVALID_ARGUMENT,
        "message": "the JSON body is nested too deeply to read",
    }
    assert_still_serving(daemon)


@WORKERS
def test_json_attribute_nested_32_deep_is_cut_and_the_rest_stored(
    daemon_factory: Any, workers: str
) -> None:
    daemon = daemon_factory("--decode-workers", workers)
    deep: dict[str, Any] = {"stringValue": "leaf"}
    for i in range(32):
        deep = {"kvlistValue": {"values": [{"key": f"k{i}", "value": deep}]}}
    attributes = [
        {"key": "deep", "value": deep},
        {"key": "ok", "value": {"stringValue": "yes"}},
    ]
    body = json_spans([{"name": "deep-json", "attributes": attributes}, {"name": "plain-json"}])
    reply = send_http(daemon, body, content_type="application/json")
    assert reply.status == 200, reply.body[:300]
    assert reply.json() == {
        "partialSuccess": {
            "errorMessage": "1 span: attribute 'deep' nested deeper than 16 levels; cut"
        }
    }
    rows = daemon.sql("SELECT name, attributes FROM spans ORDER BY name")
    assert [row["name"] for row in rows] == ["deep-json", "plain-json"]
    stored = rows[0]["attributes"]  # the API gives JSON columns as JSON
    assert stored["ok"] == "yes" and NESTED_MARKER in json.dumps(stored, ensure_ascii=False)
    assert_still_serving(daemon)
