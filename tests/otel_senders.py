"""Telemetry of known shapes, sent to a real ophiond with the OpenTelemetry SDK's exporters.

Every sender uses explicit clocks (``start_time=``, ``end_time=``, ``timestamp=``) and checks that
ophiond accepted each export, so a test that reads the data back knows exactly what is stored.
Shared by the query end-to-end tests and the TUI's pilot tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conftest import Exports, RunningDaemon, recorded
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
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
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

MS = 1_000_000
S = 1_000_000_000

# The exporters retry transient failures until this runs out: a refused export fails in seconds.
EXPORT_TIMEOUT_S = 3.0


# ---------------------------------------------------------------------------------------------
# Exporting with the SDK, and checking that ophiond accepted every export


def grpc_spans(daemon: RunningDaemon) -> SpanExporter:
    return GrpcSpanExporter(
        endpoint=f"http://{daemon.grpc_endpoint}", insecure=True, timeout=EXPORT_TIMEOUT_S
    )


def http_spans(daemon: RunningDaemon) -> SpanExporter:
    return HttpSpanExporter(endpoint=daemon.http_url("/v1/traces"), timeout=EXPORT_TIMEOUT_S)


class ChosenTraceIds(RandomIdGenerator):
    """Trace ids from a list (so a test knows their prefixes); span ids stay random."""

    def __init__(self, *trace_ids: int) -> None:
        self._trace_ids = iter(trace_ids)

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)


@dataclass
class SpanSender:
    """One service's TracerProvider, exporting to ophiond when closed."""

    daemon: RunningDaemon
    provider: TracerProvider
    tracer: Tracer
    exports: Exports

    def close(self) -> None:
        self.provider.force_flush()
        self.provider.shutdown()
        self.exports.check(self.daemon)


def span_sender(
    daemon: RunningDaemon,
    service: str,
    exporter: SpanExporter,
    resource: dict[str, Any] | None = None,
    ids: RandomIdGenerator | None = None,
) -> SpanSender:
    exporter, exports = recorded(exporter)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, **(resource or {})}),
        id_generator=ids or RandomIdGenerator(),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return SpanSender(daemon, provider, provider.get_tracer(f"shop.{service}", "1.0.0"), exports)


def make_span(
    tracer: Tracer,
    name: str,
    start_ns: int,
    end_ns: int,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: trace.Span | None = None,
    attributes: dict[str, Any] | None = None,
    error: str | None = None,
    events: Sequence[tuple[str, int, dict[str, Any]]] = (),
    exception: tuple[BaseException, int] | None = None,
) -> trace.Span:
    """A finished span with the clocks, kind, parent, status and events given."""
    context = trace.set_span_in_context(parent) if parent is not None else Context()
    span = tracer.start_span(
        name, context=context, kind=kind, start_time=start_ns, attributes=attributes
    )
    for event_name, at_ns, event_attributes in events:
        span.add_event(event_name, event_attributes, timestamp=at_ns)
    if exception is not None:
        span.record_exception(exception[0], timestamp=exception[1])
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)
    return span


def trace_hex(span: trace.Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def span_hex(span: trace.Span) -> str:
    return format(span.get_span_context().span_id, "016x")


# ---------------------------------------------------------------------------------------------
# The shop: frontend -> checkout requests, and a batch service with only INTERNAL spans

# Each request: frontend SERVER "GET /checkout" -> frontend CLIENT "POST /pay" -> checkout SERVER
# "POST /pay". The checkout span lasts CHECKOUT_MS[i]; the client 1 ms more on each side; the
# frontend request 10 ms more than the checkout span in all.
CHECKOUT_MS = (12, 45, 23, 31, 90, 18, 27, 150, 38, 60)
FAILED = {3, 7}  # checkout answers these two with an error: error rate exactly 0.2
FRONTEND_MS = tuple(d + 10 for d in CHECKOUT_MS)
# The nightly jobs of the batch service: a root INTERNAL span with one INTERNAL child.
JOB_MS = (1200, 1500, 2100, 4100)
FAILED_JOBS = {1}


@dataclass
class Shop:
    """The trace ids and clocks of what :func:`send_shop` sent."""

    request_ids: list[str] = field(default_factory=list)
    request_starts: list[int] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    job_starts: list[int] = field(default_factory=list)

    def request_row(self, i: int) -> dict[str, Any]:
        """The ``ophion traces`` row of request ``i`` (without its start)."""
        return {
            "trace_id": self.request_ids[i],
            "root_service": "frontend",
            "root_name": "GET /checkout",
            "duration_ns": FRONTEND_MS[i] * MS,
            "spans": 3,
            "error": i in FAILED,
            "services": ["checkout", "frontend"],
        }

    def job_row(self, j: int) -> dict[str, Any]:
        """The ``ophion traces`` row of nightly job ``j`` (without its start)."""
        return {
            "trace_id": self.job_ids[j],
            "root_service": "batch",
            "root_name": "nightly job",
            "duration_ns": JOB_MS[j] * MS,
            "spans": 2,
            "error": j in FAILED_JOBS,
            "services": ["batch"],
        }

    def start_of(self, trace_id: str) -> int:
        starts = dict(
            zip(self.request_ids + self.job_ids, self.request_starts + self.job_starts, strict=True)
        )
        return starts[trace_id]


def send_shop(daemon: RunningDaemon) -> Shop:
    """Ten requests a second apart (two fail in checkout), then four nightly jobs."""
    base = time.time_ns() - 120 * S
    shop = Shop()
    prod = {"deployment.environment.name": "prod"}
    frontend = span_sender(daemon, "frontend", http_spans(daemon), prod)
    checkout = span_sender(daemon, "checkout", grpc_spans(daemon), prod)
    batch = span_sender(
        daemon, "batch", http_spans(daemon), {"deployment.environment.name": "staging"}
    )
    for i, d in enumerate(CHECKOUT_MS):
        t = base + i * S
        failed = i in FAILED
        root = make_span(
            frontend.tracer,
            "GET /checkout",
            t,
            t + (d + 10) * MS,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "http.route": "/checkout"},
        )
        call = make_span(
            frontend.tracer,
            "POST /pay",
            t + 4 * MS,
            t + (d + 6) * MS,
            kind=SpanKind.CLIENT,
            parent=root,
        )
        make_span(
            checkout.tracer,
            "POST /pay",
            t + 5 * MS,
            t + (d + 5) * MS,
            kind=SpanKind.SERVER,
            parent=call,
            attributes={
                "customer.tier": "gold" if i % 2 == 0 else "silver",
                "http.response.status_code": 500 if failed else 200,
            },
            error="payment declined" if failed else None,
        )
        shop.request_ids.append(trace_hex(root))
        shop.request_starts.append(t)
    for j, d in enumerate(JOB_MS):
        t = base + (11 + 3 * j) * S
        job = make_span(
            batch.tracer,
            "nightly job",
            t,
            t + d * MS,
            error="disk full" if j in FAILED_JOBS else None,
        )
        make_span(batch.tracer, "compact files", t + 100 * MS, t + (d - 100) * MS, parent=job)
        shop.job_ids.append(trace_hex(job))
        shop.job_starts.append(t)
    for sender in (frontend, checkout, batch):
        sender.close()
    return shop


# ---------------------------------------------------------------------------------------------
# One trace of known shape

KNOWN_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
NEIGHBOUR_TRACE = 0x4BF92F3600000000000000000000BEEF  # shares the first 7 hex digits


@dataclass
class KnownTrace:
    """The spans of the known trace, by role, and the trace's start."""

    start_ns: int
    root: trace.Span
    cart: trace.Span
    query: trace.Span
    charge: trace.Span
    audit: trace.Span

    @property
    def trace_id(self) -> str:
        return format(KNOWN_TRACE, "032x")


def send_known_trace(daemon: RunningDaemon) -> KnownTrace:
    """GET /order [0, 100 ms]
    ├─ load cart [5, 35]
    │  └─ SELECT cart [10, 30]   an exception event at 20 ms (retried, not an error)
    ├─ charge card [40, 95]      ERROR "card declined", an event at 41 ms
    └─ audit log [50, 60]        runs beside charge card: not on the critical path
    plus one more trace whose id shares the first 7 hex digits.
    """
    sender = span_sender(
        daemon, "api", grpc_spans(daemon), ids=ChosenTraceIds(KNOWN_TRACE, NEIGHBOUR_TRACE)
    )
    tracer = sender.tracer
    t = time.time_ns() - 30 * S
    root = make_span(
        tracer,
        "GET /order",
        t,
        t + 100 * MS,
        kind=SpanKind.SERVER,
        attributes={"http.route": "/order"},
    )
    cart = make_span(tracer, "load cart", t + 5 * MS, t + 35 * MS, parent=root)
    query = make_span(
        tracer,
        "SELECT cart",
        t + 10 * MS,
        t + 30 * MS,
        kind=SpanKind.CLIENT,
        parent=cart,
        attributes={"db.system.name": "postgresql"},
        exception=(TimeoutError("db timeout, retrying"), t + 20 * MS),
    )
    charge = make_span(
        tracer,
        "charge card",
        t + 40 * MS,
        t + 95 * MS,
        kind=SpanKind.CLIENT,
        parent=root,
        error="card declined",
        events=[("gateway.request", t + 41 * MS, {"gateway": "stripe", "attempt": 1})],
    )
    audit = make_span(tracer, "audit log", t + 50 * MS, t + 60 * MS, parent=root)
    make_span(tracer, "GET /health", t + 200 * MS, t + 201 * MS, kind=SpanKind.SERVER)
    sender.close()
    return KnownTrace(t, root, cart, query, charge, audit)


# ---------------------------------------------------------------------------------------------
# Log records

TRACE_ONE = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ONE = 0xB7AD6B7169203331
TRACE_TWO = 0x5B8EFFF798038103D269B633813FC60C
SPAN_TWO = 0xEEE19B7EC3C1B174


@dataclass(frozen=True)
class Record:
    """One log record to send, ``offset_s`` after the scenario's base time."""

    offset_s: int
    service: str
    severity: SeverityNumber
    text: str
    body: str
    trace_id: int | None = None
    span_id: int | None = None


RECORDS = (
    Record(0, "api", SeverityNumber.TRACE, "TRACE", "cache probe"),
    Record(1, "api", SeverityNumber.DEBUG, "DEBUG", "Connection pool warmed"),
    Record(2, "api", SeverityNumber.INFO, "INFO", "order 17 accepted", TRACE_ONE, SPAN_ONE),
    Record(3, "api", SeverityNumber.WARN, "WARN", "Payment retry scheduled", TRACE_ONE, SPAN_ONE),
    Record(
        4, "worker", SeverityNumber.ERROR, "ERROR", "payment FAILED for order 17", TRACE_ONE, 0x1
    ),
    Record(5, "worker", SeverityNumber.FATAL, "FATAL", "worker crashed"),
    Record(6, "worker", SeverityNumber.INFO, "INFO", "job done", TRACE_TWO, SPAN_TWO),
    Record(7, "api", SeverityNumber.WARN2, "WARN", "disk almost full"),
)


def log_context(trace_id: int | None, span_id: int | None) -> Context:
    if trace_id is None or span_id is None:
        return Context()
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(context))


def send_records(
    daemon: RunningDaemon, records: Iterable[Record], base_ns: int, transport: str = "grpc"
) -> None:
    """Emit ``records`` with the SDK's Logger API, one LoggerProvider per service."""
    providers: dict[str, tuple[LoggerProvider, Exports]] = {}
    for record in records:
        if record.service not in providers:
            exporter: LogRecordExporter
            if transport == "grpc":
                exporter = GrpcLogExporter(
                    endpoint=f"http://{daemon.grpc_endpoint}",
                    insecure=True,
                    timeout=EXPORT_TIMEOUT_S,
                )
            else:
                exporter = HttpLogExporter(
                    endpoint=daemon.http_url("/v1/logs"), timeout=EXPORT_TIMEOUT_S
                )
            exporter, exports = recorded(exporter)
            provider = LoggerProvider(resource=Resource.create({"service.name": record.service}))
            provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
            providers[record.service] = (provider, exports)
        provider = providers[record.service][0]
        provider.get_logger("shop.logs").emit(
            timestamp=base_ns + record.offset_s * S,
            context=log_context(record.trace_id, record.span_id),
            severity_number=record.severity,
            severity_text=record.text,
            body=record.body,
            attributes={"seq": record.offset_s},
        )
    for provider, exports in providers.values():
        provider.force_flush()
        provider.shutdown()
        exports.check(daemon)


# ---------------------------------------------------------------------------------------------
# Metrics of the shop


@dataclass
class SentMetrics:
    """The metric batches each exporter sent, to read the SDK's point times from."""

    cumulative: Exports
    delta: Exports

    def times(self, name: str, attributes: dict[str, Any] | None = None) -> list[int]:
        """The time of every exported point of ``name`` (with ``attributes``), in order."""
        out = []
        for batch in self.cumulative.batches + self.delta.batches:
            assert isinstance(batch, MetricsData)
            for resource_metrics in batch.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != name:
                            continue
                        for point in metric.data.data_points:
                            if attributes is None or dict(point.attributes or {}) == attributes:
                                out.append(point.time_unix_nano)
        return sorted(out)


def send_shop_metrics(daemon: RunningDaemon) -> SentMetrics:
    """Two collections in two different whole seconds.

    - ``shop.orders`` (counter, cumulative over gRPC): +3, then +5
    - ``shop.refunds`` (counter, delta over HTTP): +2, then +4
    - ``shop.latency`` (histogram, bounds 10/100/1000 ms): /pay 5, 20, 30, 50, 200 then 40, 60;
      /cart 500 in the first collection only
    - ``shop.queue.depth`` (gauge): 9, then 7
    """
    cumulative_exporter, cumulative = recorded(
        GrpcMetricExporter(
            endpoint=f"http://{daemon.grpc_endpoint}", insecure=True, timeout=EXPORT_TIMEOUT_S
        )
    )
    delta_exporter, delta = recorded(
        HttpMetricExporter(
            endpoint=daemon.http_url("/v1/metrics"),
            timeout=EXPORT_TIMEOUT_S,
            preferred_temporality={
                Counter: AggregationTemporality.DELTA,
                Histogram: AggregationTemporality.DELTA,
            },
        )
    )
    resource = Resource.create({"service.name": "shop"})
    providers = [
        MeterProvider(
            # An infinite interval: no background export, only the ones force_flush asks for.
            metric_readers=[
                PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
            ],
            resource=resource,
        )
        for exporter in (cumulative_exporter, delta_exporter)
    ]
    meter, delta_meter = (p.get_meter("shop.metrics", "1.0.0") for p in providers)
    orders = meter.create_counter("shop.orders", unit="{order}", description="Orders placed")
    refunds = delta_meter.create_counter("shop.refunds", unit="{refund}")
    latency = meter.create_histogram(
        "shop.latency", unit="ms", explicit_bucket_boundaries_advisory=[10.0, 100.0, 1000.0]
    )
    depth = meter.create_gauge("shop.queue.depth", unit="{message}")

    orders.add(3)
    refunds.add(2)
    for value in (5, 20, 30, 50, 200):
        latency.record(value, {"http.route": "/pay"})
    latency.record(500, {"http.route": "/cart"})
    depth.set(9)
    for provider in providers:
        provider.force_flush()
    # Into the next whole second, so that the second collection falls into another 1 s step.
    time.sleep(1.0 - (time.time() % 1.0) + 0.05)
    orders.add(5)
    refunds.add(4)
    for value in (40, 60):
        latency.record(value, {"http.route": "/pay"})
    depth.set(7)
    for provider in providers:
        provider.force_flush()
        provider.shutdown()
    cumulative.check(daemon)
    delta.check(daemon)
    return SentMetrics(cumulative, delta)
