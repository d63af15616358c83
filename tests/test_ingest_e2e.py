"""End to end: the real OpenTelemetry SDK and its OTLP exporters -> a real ophiond -> the views.

Each scenario runs once per transport a user can configure (gRPC, HTTP/protobuf, HTTP/JSON) and
is read back through the daemon's SQL API, field by field. Values the SDK decides (ids, clock
readings, the exponential bucket layout) are not guessed: they are taken from the very batches
the SDK handed to the OTLP exporter, which every test records on the way (see :func:`recorded`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import pytest
from conftest import RunningDaemon, recorded
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.common.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.json.http.metric_exporter import (
    OTLPMetricExporter as JsonMetricExporter,
)
from opentelemetry.exporter.otlp.json.http.trace_exporter import (
    OTLPSpanExporter as JsonSpanExporter,
)
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

Transport = Literal["grpc", "http/protobuf", "http/json"]
TRANSPORTS: tuple[Transport, ...] = ("grpc", "http/protobuf", "http/json")

# The exporters retry transient failures until this timeout runs out: keep it short so that an
# export ophiond refuses fails the test within seconds instead of stalling it.
EXPORT_TIMEOUT_S = 3.0

SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
RESOURCE = Resource.create(
    {
        "service.name": "checkout",
        "service.version": "1.4.2",
        "deployment.environment.name": "e2e",
        "host.cpu.count": 8,
    },
    schema_url=SCHEMA_URL,
)


# ---------------------------------------------------------------------------------------------
# Exporters, one per signal and transport


def span_exporter(daemon: RunningDaemon, transport: Transport, gzip: bool = False) -> SpanExporter:
    """The SDK's OTLP span exporter for ``transport``, aimed at ``daemon``."""
    if transport == "grpc":
        return GrpcSpanExporter(
            endpoint=f"http://{daemon.grpc_endpoint}",
            insecure=True,
            timeout=EXPORT_TIMEOUT_S,
            compression=grpc.Compression.Gzip if gzip else None,
        )
    compression = HttpCompression.GZIP if gzip else None
    url = daemon.http_url("/v1/traces")
    if transport == "http/protobuf":
        return HttpSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S, compression=compression)
    return JsonSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S, compression=compression)


def log_exporter(daemon: RunningDaemon, transport: Transport) -> LogRecordExporter:
    """The SDK's OTLP log exporter for ``transport``, aimed at ``daemon``."""
    if transport == "grpc":
        return GrpcLogExporter(
            endpoint=f"http://{daemon.grpc_endpoint}", insecure=True, timeout=EXPORT_TIMEOUT_S
        )
    if transport == "http/protobuf":
        return HttpLogExporter(endpoint=daemon.http_url("/v1/logs"), timeout=EXPORT_TIMEOUT_S)
    return JsonLogExporter(endpoint=daemon.http_url("/v1/logs"), timeout=EXPORT_TIMEOUT_S)


def metric_exporter(daemon: RunningDaemon, transport: Transport) -> MetricExporter:
    """The SDK's OTLP metric exporter for ``transport`` (default temporality: cumulative)."""
    if transport == "grpc":
        return GrpcMetricExporter(
            endpoint=f"http://{daemon.grpc_endpoint}", insecure=True, timeout=EXPORT_TIMEOUT_S
        )
    if transport == "http/protobuf":
        return HttpMetricExporter(endpoint=daemon.http_url("/v1/metrics"), timeout=EXPORT_TIMEOUT_S)
    return JsonMetricExporter(endpoint=daemon.http_url("/v1/metrics"), timeout=EXPORT_TIMEOUT_S)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    """The OTLP transport of this run of the test."""
    chosen: Transport = request.param
    return chosen


# ---------------------------------------------------------------------------------------------
# Small conversions between SDK values and what the views show


def hex_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x")


def hex_span_id(span_id: int) -> str:
    return format(span_id, "016x")


def as_json(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """SDK attributes as they read back from a JSON column (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (attributes or {}).items()
    }


def assert_timestamp(shown: str | None, unix_nano: int) -> None:
    """A view's TIMESTAMP column (ISO text, UTC, microseconds) shows ``unix_nano`` to the µs."""
    assert shown is not None
    exact = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=unix_nano / 1000)
    assert abs(dt.datetime.fromisoformat(shown) - exact) <= dt.timedelta(microseconds=1), (
        shown,
        unix_nano,
    )


# ---------------------------------------------------------------------------------------------
# Traces

# The server span continues a trace started upstream, as an instrumented HTTP server does when
# the request carries traceparent and tracestate headers.
UPSTREAM = SpanContext(
    trace_id=0x5B8EFFF798038103D269B633813FC60C,
    span_id=0xEEE19B7EC3C1B174,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("ophion", "e2e")]),
)

TYPED_ATTRIBUTES: dict[str, Any] = {
    "app.user": "ada",
    "app.items": 3,
    "app.delta": -7,
    "app.big_id": 2**53 + 1,  # past a double's precision: must come back exact
    "app.ratio": 0.25,
    "app.discounted": True,
    "app.tags": ["new", "vip"],
    "app.quantities": [1, 2, 3],
    "app.prices": [9.99, 0.5],
    "app.checks": [True, False],
    "app.note": "naïve café ✓ 注文",
}

SERVER, CLIENT, INTERNAL = "GET /orders/{id}", "SELECT orders", "price order"
PRODUCER, CONSUMER = "orders publish", "orders process"


def send_checkout_trace(exporter: SpanExporter) -> None:
    """One request: SERVER -> CLIENT -> INTERNAL, a PRODUCER, and later a linked CONSUMER."""
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    http = provider.get_tracer(
        "checkout.http", "1.2.3", schema_url=SCHEMA_URL, attributes={"library.mode": "e2e"}
    )
    db = provider.get_tracer("checkout.db", "0.9.0")
    upstream = trace.set_span_in_context(NonRecordingSpan(UPSTREAM))
    server_attributes = {
        "http.request.method": "GET",
        "http.route": "/orders/{id}",
        "http.response.status_code": 200,
        **TYPED_ATTRIBUTES,
    }
    with http.start_as_current_span(
        SERVER, context=upstream, kind=SpanKind.SERVER, attributes=server_attributes
    ):
        with db.start_as_current_span(
            CLIENT,
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "db.operation.name": "SELECT"},
        ) as client:
            client.add_event(
                "rows fetched", {"db.response.returned_rows": 3, "db.cache_hit": False}
            )
            with http.start_as_current_span(INTERNAL, kind=SpanKind.INTERNAL) as internal:
                try:
                    raise ValueError("negative price: -4.5")
                except ValueError as e:
                    internal.record_exception(e)
                    internal.set_status(Status(StatusCode.ERROR, "pricing failed"))
            client.set_status(Status(StatusCode.OK))
        with http.start_as_current_span(PRODUCER, kind=SpanKind.PRODUCER) as producer:
            message = producer.get_span_context()
    # The consumer handles the message later, in a trace of its own that links back to it.
    link = Link(message, {"messaging.message.id": "m-42", "messaging.batch.index": 0})
    with http.start_as_current_span(
        CONSUMER, context=Context(), kind=SpanKind.CONSUMER, links=[link]
    ):
        pass
    provider.force_flush()
    provider.shutdown()


@dataclass
class StoredTrace:
    """The spans the SDK exported (by name) and the rows of the ``spans`` view (by name)."""

    daemon: RunningDaemon
    sent: dict[str, ReadableSpan]
    rows: dict[str, dict[str, Any]]


@pytest.fixture
def stored_trace(daemon: RunningDaemon, transport: Transport) -> StoredTrace:
    exporter, exports = recorded(span_exporter(daemon, transport))
    send_checkout_trace(exporter)
    exports.check(daemon)
    sent = {span.name: span for batch in exports.batches for span in batch}
    rows = daemon.sql("SELECT * FROM spans ORDER BY start_time_unix_nano")
    assert sorted(row["name"] for row in rows) == sorted(sent), "each span stored exactly once"
    return StoredTrace(daemon, sent, {row["name"]: row for row in rows})


def test_span_tree_ids_and_clocks_are_exact(stored_trace: StoredTrace) -> None:
    sent, rows = stored_trace.sent, stored_trace.rows
    for name, span in sent.items():
        row = rows[name]
        assert row["trace_id"] == hex_trace_id(span.context.trace_id), name
        assert row["span_id"] == hex_span_id(span.context.span_id), name
        assert row["parent_span_id"] == (hex_span_id(span.parent.span_id) if span.parent else None)
        assert span.start_time is not None and span.end_time is not None
        assert row["start_time_unix_nano"] == span.start_time, name
        assert row["end_time_unix_nano"] == span.end_time, name
        assert row["duration_ns"] == span.end_time - span.start_time, name
        assert_timestamp(row["start_time"], span.start_time)
        assert_timestamp(row["end_time"], span.end_time)

    # The tree as a user reads it: upstream -> server -> client -> internal, and the producer
    # under the server; the consumer starts a trace of its own.
    request_trace = hex_trace_id(UPSTREAM.trace_id)
    assert {rows[n]["trace_id"] for n in (SERVER, CLIENT, INTERNAL, PRODUCER)} == {request_trace}
    assert rows[SERVER]["parent_span_id"] == hex_span_id(UPSTREAM.span_id)
    assert rows[CLIENT]["parent_span_id"] == rows[SERVER]["span_id"]
    assert rows[INTERNAL]["parent_span_id"] == rows[CLIENT]["span_id"]
    assert rows[PRODUCER]["parent_span_id"] == rows[SERVER]["span_id"]
    assert rows[CONSUMER]["parent_span_id"] is None
    assert rows[CONSUMER]["trace_id"] != request_trace
    assert rows[SERVER]["duration_ns"] > rows[CLIENT]["duration_ns"] > rows[INTERNAL]["duration_ns"]

    # The documented way to ask for recent spans finds them all (times are UTC, like now()).
    recent = stored_trace.daemon.sql(
        "SELECT count(*) AS n FROM spans WHERE start_time > now() - INTERVAL 1 HOUR "
        "AND end_time <= now()"
    )
    assert recent == [{"n": len(sent)}]


def test_span_kind_status_flags_and_trace_state(stored_trace: StoredTrace) -> None:
    rows = stored_trace.rows
    assert {name: row["kind"] for name, row in rows.items()} == {
        SERVER: "SERVER",
        CLIENT: "CLIENT",
        INTERNAL: "INTERNAL",
        PRODUCER: "PRODUCER",
        CONSUMER: "CONSUMER",
    }
    assert {name: (row["status_code"], row["status_message"]) for name, row in rows.items()} == {
        SERVER: ("UNSET", None),
        CLIENT: ("OK", None),
        INTERNAL: ("ERROR", "pricing failed"),
        PRODUCER: ("UNSET", None),
        CONSUMER: ("UNSET", None),
    }
    # OTLP span flags: bit 8 "parent remoteness is known", bit 9 "the parent is remote".
    assert rows[SERVER]["flags"] == 0x300
    assert {rows[n]["flags"] for n in (CLIENT, INTERNAL, PRODUCER, CONSUMER)} == {0x100}
    # The upstream tracestate travels with every span of the request's trace.
    assert {rows[n]["trace_state"] for n in (SERVER, CLIENT, INTERNAL, PRODUCER)} == {"ophion=e2e"}
    assert rows[CONSUMER]["trace_state"] is None
    for row in rows.values():
        assert row["dropped_attributes_count"] == 0
        assert row["dropped_events_count"] == 0
        assert row["dropped_links_count"] == 0


def test_span_attributes_of_every_type_and_hot_columns(stored_trace: StoredTrace) -> None:
    sent, rows = stored_trace.sent, stored_trace.rows
    for name, span in sent.items():
        assert rows[name]["attributes"] == as_json(span.attributes), name
    server = rows[SERVER]["attributes"]
    assert {key: server[key] for key in TYPED_ATTRIBUTES} == TYPED_ATTRIBUTES
    assert type(server["app.big_id"]) is int and type(server["app.ratio"]) is float

    hot = ("http_method", "http_route", "http_status_code", "db_system")
    assert {col: rows[SERVER][col] for col in hot} == {
        "http_method": "GET",
        "http_route": "/orders/{id}",
        "http_status_code": 200,
        "db_system": None,
    }
    assert {col: rows[CLIENT][col] for col in hot} == {
        "http_method": None,
        "http_route": None,
        "http_status_code": None,
        "db_system": "postgresql",
    }

    # Any attribute is queryable, not only the hot columns.
    daemon = stored_trace.daemon
    found = daemon.sql("""SELECT name FROM spans WHERE attributes->>'$."app.user"' = 'ada'""")
    assert found == [{"name": SERVER}]
    found = daemon.sql(
        """SELECT name FROM spans WHERE attributes->>'$."db.operation.name"' = 'SELECT'"""
    )
    assert found == [{"name": CLIENT}]


def test_span_resource_and_scope(stored_trace: StoredTrace) -> None:
    for name, row in stored_trace.rows.items():
        assert row["service_name"] == "checkout", name
        assert row["resource_attributes"] == as_json(RESOURCE.attributes), name
        assert row["resource_attributes"]["deployment.environment.name"] == "e2e"
        assert row["resource_attributes"]["host.cpu.count"] == 8
        assert row["resource_schema_url"] == SCHEMA_URL, name
    scopes = {
        name: (
            row["scope_name"],
            row["scope_version"],
            row["scope_attributes"],
            row["scope_schema_url"],
        )
        for name, row in stored_trace.rows.items()
    }
    http_scope = ("checkout.http", "1.2.3", {"library.mode": "e2e"}, SCHEMA_URL)
    assert scopes == {
        SERVER: http_scope,
        CLIENT: ("checkout.db", "0.9.0", {}, None),
        INTERNAL: http_scope,
        PRODUCER: http_scope,
        CONSUMER: http_scope,
    }


def test_span_events_and_recorded_exception(stored_trace: StoredTrace) -> None:
    events = stored_trace.daemon.sql("SELECT * FROM span_events ORDER BY time_unix_nano")
    expected: list[dict[str, Any]] = [
        {
            "trace_id": hex_trace_id(span.context.trace_id),
            "span_id": hex_span_id(span.context.span_id),
            "span_name": span.name,
            "name": event.name,
            "time_unix_nano": event.timestamp,
            "attributes": as_json(event.attributes),
            "dropped_attributes_count": 0,
            "service_name": "checkout",
        }
        for span in stored_trace.sent.values()
        for event in span.events
    ]
    expected.sort(key=lambda event: event["time_unix_nano"])
    assert [{key: row[key] for key in expected[0]} for row in events] == expected
    for row in events:
        assert_timestamp(row["time"], row["time_unix_nano"])

    fetched, exception = events
    assert (fetched["span_name"], fetched["name"]) == (CLIENT, "rows fetched")
    assert fetched["attributes"] == {"db.response.returned_rows": 3, "db.cache_hit": False}
    assert (exception["span_name"], exception["name"]) == (INTERNAL, "exception")
    assert exception["attributes"]["exception.type"] == "ValueError"
    assert exception["attributes"]["exception.message"] == "negative price: -4.5"
    assert "Traceback" in exception["attributes"]["exception.stacktrace"]


def test_span_links(stored_trace: StoredTrace) -> None:
    links = stored_trace.daemon.sql("SELECT * FROM span_links")
    consumer, producer = stored_trace.rows[CONSUMER], stored_trace.rows[PRODUCER]
    assert links == [
        {
            "trace_id": consumer["trace_id"],
            "span_id": consumer["span_id"],
            "linked_trace_id": producer["trace_id"],
            "linked_span_id": producer["span_id"],
            "trace_state": None,  # the SDK's OTLP encoders do not send a link's tracestate
            "flags": 0x100,  # the producer's context is local, and known to be
            "attributes": {"messaging.message.id": "m-42", "messaging.batch.index": 0},
            "dropped_attributes_count": 0,
            "service_name": "checkout",
        }
    ]


def test_gzip_compressed_spans_are_stored(daemon: RunningDaemon, transport: Transport) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip, which many deployments turn on, changes nothing."""
    exporter, exports = recorded(span_exporter(daemon, transport, gzip=True))
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    with provider.get_tracer("checkout.http").start_as_current_span(
        "GET /health", attributes={"http.route": "/health", "app.note": "naïve ✓"}
    ):
        pass
    provider.shutdown()
    exports.check(daemon)
    [span] = [span for batch in exports.batches for span in batch]
    rows = daemon.sql("SELECT trace_id, span_id, name, http_route, attributes FROM spans")
    assert rows == [
        {
            "trace_id": hex_trace_id(span.context.trace_id),
            "span_id": hex_span_id(span.context.span_id),
            "name": "GET /health",
            "http_route": "/health",
            "attributes": {"http.route": "/health", "app.note": "naïve ✓"},
        }
    ]


# ---------------------------------------------------------------------------------------------
# Logs


# A body can be any AnyValue, not only a string or a map.
SCALAR_BODIES: list[Any] = [42, 2.5, True, b"\x00\xffraw", ["refund", 2, True]]


def send_logs(exporter: LogRecordExporter) -> SpanContext:
    """Python logging inside a span, then the Logger API; return the span's context."""
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        # The SDK's LoggingHandler is deprecated for the one in opentelemetry-instrumentation-
        # logging (not a dependency); both translate records the same way, through the Logger API.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    payments = logging.getLogger("checkout.payments")
    payments.setLevel(logging.DEBUG)
    payments.propagate = False
    payments.addHandler(handler)
    tracer = TracerProvider(resource=RESOURCE).get_tracer("checkout")
    try:
        with tracer.start_as_current_span("charge card") as span:
            payments.warning(
                "card %s declined for order %d",
                "visa",
                1234,
                extra={"order.id": 1234, "payment.retry": True},
            )
            try:
                raise ConnectionError("gateway timeout")
            except ConnectionError:
                payments.exception("payment failed")
            payments.info({"event": "cart.updated", "items": 3, "total": 42.5, "tags": ["gift"]})
    finally:  # loggers are process-wide: leave this one as other tests expect to find it
        payments.removeHandler(handler)
        payments.setLevel(logging.NOTSET)
        payments.propagate = True
    audit = provider.get_logger("checkout.audit", "2.0.0")
    # No timestamp on purpose: ophiond must then show the observed time.
    audit.emit(
        body={"user": "ada", "action": "refund"},
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        event_name="checkout.refund",
        attributes={"refund.amount": 12.5},
    )
    for body in SCALAR_BODIES:
        audit.emit(body=body, severity_number=SeverityNumber.DEBUG)
    provider.force_flush()
    provider.shutdown()
    return span.get_span_context()


@dataclass
class StoredLogs:
    """The span the logs were written in, and each exported record with its ``logs`` row."""

    daemon: RunningDaemon
    span: SpanContext
    pairs: list[tuple[ReadableLogRecord, dict[str, Any]]]


@pytest.fixture
def stored_logs(daemon: RunningDaemon, transport: Transport) -> StoredLogs:
    exporter, exports = recorded(log_exporter(daemon, transport))
    span = send_logs(exporter)
    exports.check(daemon)
    sent: list[ReadableLogRecord] = [record for batch in exports.batches for record in batch]
    rows = daemon.sql("SELECT * FROM logs")
    assert len(rows) == len(sent) == 4 + len(SCALAR_BODIES)
    # The observed time is a time_ns() reading per record: it pairs each row with its record.
    by_observed = {row["observed_time_unix_nano"]: row for row in rows}
    assert len(by_observed) == len(rows)
    return StoredLogs(
        daemon, span, [(r, by_observed[r.log_record.observed_timestamp]) for r in sent]
    )


def test_logs_from_python_logging_keep_severity_body_trace_and_attributes(
    stored_logs: StoredLogs,
) -> None:
    (warning, warning_row), (error, error_row) = stored_logs.pairs[:2]
    for record, row in stored_logs.pairs[:2]:
        assert record.log_record.timestamp is not None
        assert row["time_unix_nano"] == record.log_record.timestamp
        assert_timestamp(row["timestamp"], record.log_record.timestamp)
        assert_timestamp(row["observed_timestamp"], record.log_record.observed_timestamp)
        assert row["trace_id"] == hex_trace_id(stored_logs.span.trace_id)
        assert row["span_id"] == hex_span_id(stored_logs.span.span_id)
        # W3C trace flags of the span: bit 0 "sampled" (this SDK also sets bit 1 "random").
        assert row["flags"] == int(record.log_record.trace_flags)
        assert row["flags"] & 1
        assert row["body_type"] == "string"
        assert row["attributes"] == as_json(record.log_record.attributes)
        assert row["attributes"]["code.function.name"] == "send_logs"
        assert row["service_name"] == "checkout"
        assert row["resource_attributes"] == as_json(RESOURCE.attributes)
        assert (row["scope_name"], row["scope_version"]) == ("checkout.payments", None)
        assert row["event_name"] is None

    assert (warning_row["severity_number"], warning_row["severity_text"]) == (13, "WARN")
    assert warning_row["body"] == "card visa declined for order 1234"
    assert warning_row["attributes"]["order.id"] == 1234
    assert warning_row["attributes"]["payment.retry"] is True

    assert (error_row["severity_number"], error_row["severity_text"]) == (17, "ERROR")
    assert error_row["body"] == "payment failed"
    assert error_row["attributes"]["exception.type"] == "ConnectionError"
    assert error_row["attributes"]["exception.message"] == "gateway timeout"
    assert "Traceback" in error_row["attributes"]["exception.stacktrace"]

    # Severity is a real column: filtering on it finds the error alone.
    found = stored_logs.daemon.sql("SELECT body FROM logs WHERE severity_number >= 17")
    assert found == [{"body": "payment failed"}]


def test_structured_log_bodies_are_stored_as_json(stored_logs: StoredLogs) -> None:
    (_, logged_dict), (audit, audit_row) = stored_logs.pairs[2:4]

    assert (logged_dict["severity_number"], logged_dict["severity_text"]) == (9, "INFO")
    assert logged_dict["body_type"] == "kvlist"
    assert json.loads(logged_dict["body"]) == {
        "event": "cart.updated",
        "items": 3,
        "total": 42.5,
        "tags": ["gift"],
    }
    assert logged_dict["trace_id"] == hex_trace_id(stored_logs.span.trace_id)

    assert audit_row["body_type"] == "kvlist"
    assert json.loads(audit_row["body"]) == {"user": "ada", "action": "refund"}
    assert (audit_row["severity_number"], audit_row["severity_text"]) == (9, "INFO")
    assert audit_row["event_name"] == "checkout.refund"
    assert audit_row["attributes"] == {"refund.amount": 12.5}
    assert (audit_row["scope_name"], audit_row["scope_version"]) == ("checkout.audit", "2.0.0")
    # Emitted outside any span, without a time of its own.
    assert audit_row["trace_id"] is None and audit_row["span_id"] is None
    assert audit.log_record.timestamp is None
    assert audit_row["time_unix_nano"] == audit.log_record.observed_timestamp
    assert audit_row["service_name"] == "checkout"


# ---------------------------------------------------------------------------------------------
# Metrics

COUNTER, UP_DOWN, HISTOGRAM = "checkout.orders", "checkout.in_flight", "checkout.latency"
GAUGE, OBSERVABLE_GAUGE, EXPONENTIAL = (
    "checkout.queue.depth",
    "checkout.cpu.utilization",
    "checkout.payload.size",
)


def cpu_utilization(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(0.75, {"cpu": "0"})]


def send_metrics(exporter: MetricExporter) -> SpanContext:
    """One export of every instrument kind; return the span the exemplar was recorded in."""
    # An infinite interval: no background export, only the one force_flush asks for.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    exponential = View(
        instrument_name=EXPONENTIAL, aggregation=ExponentialBucketHistogramAggregation(max_size=20)
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, views=[exponential])
    meter = provider.get_meter("checkout.metrics", "3.1.0")

    orders = meter.create_counter(COUNTER, unit="{order}", description="Orders placed")
    orders.add(3, {"payment.method": "card"})
    orders.add(4, {"payment.method": "card"})
    orders.add(1, {"payment.method": "cash"})

    in_flight = meter.create_up_down_counter(
        UP_DOWN, unit="{request}", description="Requests in progress"
    )
    in_flight.add(5)
    in_flight.add(-8)

    latency = meter.create_histogram(
        HISTOGRAM,
        unit="ms",
        description="Checkout latency",
        explicit_bucket_boundaries_advisory=[10.0, 100.0, 1000.0],
    )
    latency.record(12, {"http.route": "/orders"})
    tracer = TracerProvider(resource=RESOURCE).get_tracer("checkout")
    with tracer.start_as_current_span("slow checkout") as span:
        latency.record(80, {"http.route": "/orders"})  # sampled span: becomes an exemplar
    latency.record(3000, {"http.route": "/orders"})

    depth = meter.create_gauge(GAUGE, unit="{message}", description="Messages waiting")
    depth.set(9, {"queue": "orders"})
    depth.set(7, {"queue": "orders"})
    meter.create_observable_gauge(
        OBSERVABLE_GAUGE, callbacks=[cpu_utilization], unit="1", description="CPU in use"
    )

    sizes = meter.create_histogram(EXPONENTIAL, unit="By", description="Request payload size")
    for size in (0, 100, 200, 400, 1500):
        sizes.record(size)

    provider.force_flush()
    provider.shutdown()
    return span.get_span_context()


@dataclass
class StoredMetrics:
    """The exported metrics and the ``metric_points`` rows, both by metric name."""

    daemon: RunningDaemon
    sent: dict[str, Metric]
    rows: dict[str, list[dict[str, Any]]]
    exemplar_span: SpanContext

    def points(self, name: str) -> list[tuple[Any, dict[str, Any]]]:
        """Each exported data point of ``name`` with its row, matched on the attributes."""
        rows = {json.dumps(row["attributes"], sort_keys=True): row for row in self.rows[name]}
        sent = self.sent[name].data.data_points
        assert len(rows) == len(self.rows[name]) == len(sent), name
        return [
            (point, rows[json.dumps(as_json(point.attributes), sort_keys=True)]) for point in sent
        ]

    def check_common(self, name: str, metric_type: str, unit: str, description: str) -> None:
        """What every point of ``name`` shares: names, type, clock readings, origin."""
        for point, row in self.points(name):
            assert row["metric_name"] == name
            assert (row["metric_type"], row["unit"], row["description"]) == (
                metric_type,
                unit,
                description,
            )
            assert row["time_unix_nano"] == point.time_unix_nano, name
            assert row["start_time_unix_nano"] == (point.start_time_unix_nano or None), name
            assert_timestamp(row["timestamp"], point.time_unix_nano)
            assert row["service_name"] == "checkout"
            assert row["resource_attributes"] == as_json(RESOURCE.attributes)
            assert (row["scope_name"], row["scope_version"]) == ("checkout.metrics", "3.1.0")


@pytest.fixture
def stored_metrics(daemon: RunningDaemon, transport: Transport) -> StoredMetrics:
    exporter, exports = recorded(metric_exporter(daemon, transport))
    span = send_metrics(exporter)
    exports.check(daemon)
    assert len(exports.batches) == 1
    data: MetricsData = exports.batches[0]
    sent = {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in daemon.sql("SELECT * FROM metric_points"):
        rows.setdefault(row["metric_name"], []).append(row)
    assert sorted(rows) == sorted(sent)
    return StoredMetrics(daemon, sent, rows, span)


def test_counter_is_a_monotonic_cumulative_sum(stored_metrics: StoredMetrics) -> None:
    stored_metrics.check_common(COUNTER, "sum", "{order}", "Orders placed")
    values = {}
    for _, row in stored_metrics.points(COUNTER):
        assert (row["temporality"], row["is_monotonic"]) == ("CUMULATIVE", True)
        assert row["start_time_unix_nano"] is not None
        assert row["start_time_unix_nano"] <= row["time_unix_nano"]
        assert row["exemplars"] is None  # added outside any sampled span
        values[row["attributes"]["payment.method"]] = (row["value"], row["value_int"])
    assert values == {"card": (7.0, 7), "cash": (1.0, 1)}


def test_up_down_counter_can_go_negative(stored_metrics: StoredMetrics) -> None:
    stored_metrics.check_common(UP_DOWN, "sum", "{request}", "Requests in progress")
    [(_, row)] = stored_metrics.points(UP_DOWN)
    assert (row["temporality"], row["is_monotonic"]) == ("CUMULATIVE", False)
    assert (row["value"], row["value_int"]) == (-3.0, -3)
    assert row["attributes"] == {}


def test_histogram_buckets_and_exemplar(stored_metrics: StoredMetrics) -> None:
    stored_metrics.check_common(HISTOGRAM, "histogram", "ms", "Checkout latency")
    [(point, row)] = stored_metrics.points(HISTOGRAM)
    assert (row["temporality"], row["is_monotonic"]) == ("CUMULATIVE", None)
    assert row["attributes"] == {"http.route": "/orders"}
    assert (row["count"], row["sum"], row["min"], row["max"]) == (3, 3092.0, 12.0, 3000.0)
    assert row["explicit_bounds"] == [10.0, 100.0, 1000.0]
    assert row["bucket_counts"] == [0, 2, 0, 1]
    assert row["value"] is None and row["value_int"] is None

    [exemplar] = point.exemplars
    span = stored_metrics.exemplar_span
    [stored] = row["exemplars"]
    assert stored == {
        "time_unix_nano": exemplar.time_unix_nano,
        "value": 80,
        "trace_id": hex_trace_id(span.trace_id),
        "span_id": hex_span_id(span.span_id),
        "filtered_attributes": {},
    }


def test_gauges_keep_the_last_value(stored_metrics: StoredMetrics) -> None:
    stored_metrics.check_common(GAUGE, "gauge", "{message}", "Messages waiting")
    [(_, row)] = stored_metrics.points(GAUGE)
    assert (row["temporality"], row["is_monotonic"]) == (None, None)
    assert (row["value"], row["value_int"]) == (7.0, 7)
    assert row["attributes"] == {"queue": "orders"}

    stored_metrics.check_common(OBSERVABLE_GAUGE, "gauge", "1", "CPU in use")
    [(_, row)] = stored_metrics.points(OBSERVABLE_GAUGE)
    assert (row["value"], row["value_int"]) == (0.75, None)
    assert row["attributes"] == {"cpu": "0"}


def test_exponential_histogram(stored_metrics: StoredMetrics) -> None:
    stored_metrics.check_common(EXPONENTIAL, "exponential_histogram", "By", "Request payload size")
    [(point, row)] = stored_metrics.points(EXPONENTIAL)
    assert row["temporality"] == "CUMULATIVE"
    assert (row["count"], row["sum"], row["min"], row["max"]) == (5, 2200.0, 0.0, 1500.0)
    assert row["zero_count"] == 1
    assert sum(row["positive_bucket_counts"]) == row["count"] - row["zero_count"]
    assert sum(row["negative_bucket_counts"]) == 0
    # Where the buckets lie is the SDK's choice (max_size=20 forces a coarse scale): as sent.
    assert row["scale"] == point.scale
    assert row["positive_offset"] == point.positive.offset
    assert row["positive_bucket_counts"] == list(point.positive.bucket_counts)
    assert row["negative_offset"] == point.negative.offset
    assert row["negative_bucket_counts"] == list(point.negative.bucket_counts)
    assert row["explicit_bounds"] is None and row["bucket_counts"] is None


def test_log_bodies_of_other_types_keep_their_type(stored_logs: StoredLogs) -> None:
    shown = [(row["body_type"], json.loads(row["body"])) for _, row in stored_logs.pairs[4:]]
    assert shown == [
        ("int", 42),
        ("double", 2.5),
        ("bool", True),
        ("bytes", base64.b64encode(b"\x00\xffraw").decode()),
        ("array", ["refund", 2, True]),
    ]
    for _, row in stored_logs.pairs[4:]:
        assert (row["severity_number"], row["severity_text"]) == (5, None)  # DEBUG, no text
