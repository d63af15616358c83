"""Pre-encoded OTLP export requests shaped like real traffic, renewed cheaply on every send.

The traffic model: five services of a shop (frontend, checkout, payment, inventory, users);
traces of 10 spans across four of them (SERVER, CLIENT and INTERNAL spans with parent/child
links); about 8 attributes per span (HTTP method, route and status on server spans, db.system on
database client spans, a few custom ``app.*`` ones); 10% of spans with an exception event; 1,000
spans (100 traces) per request, grouped by service as a collector's batch is. Log requests hold
1,000 records of the same services with realistic text bodies, 60% of them tied to a trace.
Everything is drawn from a seeded generator, so two runs send the same bytes.

A :class:`PayloadTemplate` is one encoded request plus the byte positions of its ids and
timestamps. :meth:`PayloadTemplate.render` gives each send fresh random-looking ids and a time
shift without re-encoding: the body is held as one little-endian integer, ids are XORed with a
per-send key and the fixed64 timestamps get an offset, each in one big-integer operation. So the
load generator costs little CPU (it shares two cores with the daemon), and the daemon still
stores distinct traces whose ids compress no better than real, random ones.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SPANS_PER_TRACE = 10
TRACES_PER_REQUEST = 100
SPANS_PER_REQUEST = SPANS_PER_TRACE * TRACES_PER_REQUEST
LOGS_PER_REQUEST = 1000
EXCEPTION_RATE = 0.10
CUSTOMERS = 20_000
# A text that appears in about 0.5% of log bodies: what the log search looks for.
RARE_LOG_TEXT = "deadlock"

SERVICES = ("frontend", "checkout", "payment", "inventory", "users")
_LANGUAGES = {
    "frontend": "nodejs",
    "checkout": "python",
    "payment": "java",
    "inventory": "go",
    "users": "python",
}
_ROUTES = {
    "frontend": [
        ("GET", "/api/products"),
        ("GET", "/api/products/{id}"),
        ("POST", "/api/cart"),
        ("POST", "/api/checkout"),
        ("GET", "/api/orders/{id}"),
    ],
    "users": [("GET", "/users/{id}"), ("GET", "/users/{id}/addresses")],
    "inventory": [("GET", "/stock/{sku}"), ("POST", "/stock/reserve")],
    "checkout": [("POST", "/checkout"), ("GET", "/orders/{id}")],
    "payment": [("POST", "/charge"), ("POST", "/refund")],
}
# service -> (db.system, namespace, operation, table, query text)
_DATABASES = {
    "users": (
        "postgresql",
        "users",
        "SELECT",
        "users",
        "SELECT id, name, email FROM users WHERE id = $1",
    ),
    "inventory": (
        "mysql",
        "stock",
        "SELECT",
        "stock",
        "SELECT qty, warehouse FROM stock WHERE sku = ?",
    ),
    "checkout": (
        "postgresql",
        "orders",
        "INSERT",
        "orders",
        "INSERT INTO orders (customer_id, total) VALUES ($1, $2)",
    ),
}
_EXCEPTIONS = [
    ("TimeoutError", "upstream timed out after 5s"),
    ("ConnectionResetError", "connection reset by peer"),
    ("ValueError", "invalid quantity: -1"),
    ("KeyError", "'sku'"),
    ("PaymentDeclined", "card expired"),
]
_REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "ap-south-1")

_INTERNAL, _SERVER, _CLIENT = 1, 2, 3  # OTLP SpanKind numbers
_STATUS_ERROR = 2
_BACKEND = "{backend}"  # users or inventory, alternating between traces


@dataclass(frozen=True)
class _Step:
    """One span of the trace shape."""

    service: str
    kind: int
    parent: int | None
    role: str  # server | internal | http_client | db_client
    peer: str | None = None  # the service an HTTP client span calls


_TRACE_SHAPE = (
    _Step("frontend", _SERVER, None, "server"),
    _Step("frontend", _INTERNAL, 0, "internal"),
    _Step("frontend", _CLIENT, 0, "http_client", peer=_BACKEND),
    _Step(_BACKEND, _SERVER, 2, "server"),
    _Step(_BACKEND, _CLIENT, 3, "db_client"),
    _Step("frontend", _CLIENT, 0, "http_client", peer="checkout"),
    _Step("checkout", _SERVER, 5, "server"),
    _Step("checkout", _CLIENT, 6, "db_client"),
    _Step("checkout", _CLIENT, 6, "http_client", peer="payment"),
    _Step("payment", _SERVER, 8, "server"),
)
assert len(_TRACE_SHAPE) == SPANS_PER_TRACE


# ---------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True)
class PayloadTemplate:
    """One encoded export request whose ids and timestamps can be renewed for each send."""

    body: int  # the encoded request as a little-endian integer
    size: int  # its length in bytes
    trace_id_slots: int  # 1 << 8*offset for the offset of every 16-byte trace id
    span_id_slots: int  # the same for every 8-byte span id (and parent span id)
    time_slots: int  # the same for every fixed64 timestamp
    records: int  # spans or log records in the request

    def render(self, key: bytes, shift_ns: int) -> bytes:
        """The request with ids XORed with ``key`` (24 bytes) and times moved by ``shift_ns``.

        Multiplying a key by a slot mask writes it at every slot at once; slots never overlap
        and a shifted timestamp stays below 2**64, so no carry crosses into a neighbour field.
        """
        trace_key = int.from_bytes(key[:16], "little")
        span_key = int.from_bytes(key[16:24], "little")
        value = self.body + shift_ns * self.time_slots
        value ^= (trace_key * self.trace_id_slots) ^ (span_key * self.span_id_slots)
        return value.to_bytes(self.size, "little")

    def original(self) -> bytes:
        """The request as it was encoded."""
        return self.body.to_bytes(self.size, "little")


def _wire_order_fields(request: Any) -> Iterator[tuple[str, bytes]]:
    """(kind, value) of every renewable field of a request, in the order protobuf writes them.

    Kinds: ``trace`` (16-byte trace id), ``span`` (8-byte span or parent id), ``time`` (fixed64).
    Fields are written in field-number order, which is what makes one forward scan enough.
    """
    if hasattr(request, "resource_spans"):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    yield "trace", span.trace_id
                    yield "span", span.span_id
                    if span.parent_span_id:
                        yield "span", span.parent_span_id
                    yield "time", _fixed64(span.start_time_unix_nano)
                    yield "time", _fixed64(span.end_time_unix_nano)
                    for event in span.events:
                        yield "time", _fixed64(event.time_unix_nano)
        return
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield "time", _fixed64(record.time_unix_nano)
                if record.trace_id:
                    yield "trace", record.trace_id
                    yield "span", record.span_id
                yield "time", _fixed64(record.observed_time_unix_nano)


def _fixed64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _template(request: Any, records: int) -> PayloadTemplate:
    """Encode ``request`` and locate its renewable fields with one forward scan of the bytes."""
    body = request.SerializeToString()
    masks = {
        "trace": bytearray(len(body)),
        "span": bytearray(len(body)),
        "time": bytearray(len(body)),
    }
    position = 0
    for kind, value in _wire_order_fields(request):
        found = body.find(value, position)
        if found == -1:
            raise ValueError(f"a {kind} field is not where the wire order puts it")
        masks[kind][found] = 1
        position = found + len(value)  # also proves that no two fields overlap
    return PayloadTemplate(
        body=int.from_bytes(body, "little"),
        size=len(body),
        trace_id_slots=int.from_bytes(masks["trace"], "little"),
        span_id_slots=int.from_bytes(masks["span"], "little"),
        time_slots=int.from_bytes(masks["time"], "little"),
        records=records,
    )


# ---------------------------------------------------------------------------------------------
# Protobuf building blocks


def _attributes(items: dict[str, str | int | float | bool]) -> list[Any]:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    out = []
    for key, value in items.items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = AnyValue(double_value=value)
        else:
            any_value = AnyValue(string_value=value)
        out.append(KeyValue(key=key, value=any_value))
    return out


def _resource(service: str) -> Any:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    return Resource(
        attributes=_attributes(
            {
                "service.name": service,
                "service.namespace": "shop",
                "service.version": "1.4.2",
                "deployment.environment.name": "production",
                "host.name": f"{service}-7d9f8b6c4-x2x9z",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.language": _LANGUAGES[service],
                "telemetry.sdk.version": "1.27.0",
            }
        )
    )


def _stacktrace(service: str, error_type: str, message: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "/app/{service}/handlers.py", line 88, in handle\n'
        "    result = self.service.process(request)\n"
        f'  File "/app/{service}/service.py", line 142, in process\n'
        f"    raise {error_type}(message)\n"
        f"{error_type}: {message}"
    )


# ---------------------------------------------------------------------------------------------
# Traces


def _span_attributes(
    rng: random.Random, step: _Step, service: str, peer: str | None, status: int, customer: str
) -> tuple[str, dict[str, str | int | float | bool]]:
    """The span name and attributes for one step of the trace shape."""
    if step.role == "server":
        method, route = rng.choice(_ROUTES[service])
        path = route.replace("{id}", str(rng.randrange(1, 100_000))).replace(
            "{sku}", f"SKU-{rng.randrange(10_000):05d}"
        )
        return f"{method} {route}", {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status,
            "url.path": path,
            "url.scheme": "http",
            "server.address": f"{service}.shop.svc",
            "client.address": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
            "network.protocol.version": "1.1",
            "app.customer.id": customer,
            "app.region": rng.choice(_REGIONS),
        }
    if step.role == "http_client":
        assert peer is not None
        method, route = rng.choice(_ROUTES[peer])
        return method, {
            "http.request.method": method,
            "http.response.status_code": status,
            "server.address": f"{peer}.shop.svc",
            "server.port": 8080,
            "url.full": f"http://{peer}.shop.svc:8080{route}",
            "network.protocol.version": "1.1",
            "app.retry.count": rng.choice((0, 0, 0, 0, 1)),
        }
    if step.role == "db_client":
        system, namespace, operation, table, query = _DATABASES[service]
        return f"{operation} {table}", {
            "db.system": system,
            "db.namespace": namespace,
            "db.operation.name": operation,
            "db.collection.name": table,
            "db.query.text": query,
            "server.address": f"{system}.shop.svc",
            "server.port": 5432 if system == "postgresql" else 3306,
            "app.db.rows": rng.randrange(0, 50),
        }
    return "render page", {
        "code.function.name": "render_page",
        "app.cart.items": rng.randrange(1, 12),
        "app.cart.value": round(rng.uniform(5, 500), 2),
        "app.feature.new_checkout": rng.random() < 0.3,
        "thread.name": f"worker-{rng.randrange(16)}",
        "app.customer.id": customer,
    }


def _trace_spans(rng: random.Random, start_ns: int, flavor: int) -> Iterator[tuple[str, Any]]:
    """(service, Span) for one trace starting at ``start_ns``."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    trace_id = rng.randbytes(16)
    backend = "users" if flavor % 2 else "inventory"
    customer = f"cust-{rng.randrange(CUSTOMERS):05d}"
    span_ids: list[bytes] = []
    times: list[tuple[int, int]] = []
    for step in _TRACE_SHAPE:
        service = backend if step.service == _BACKEND else step.service
        peer = backend if step.peer == _BACKEND else step.peer
        if step.parent is None:
            duration = min(int(rng.lognormvariate(math.log(40e6), 0.7)), 5_000_000_000)
            start = start_ns
        else:
            parent_start, parent_duration = times[step.parent]
            start = parent_start + int(parent_duration * rng.uniform(0.02, 0.3))
            duration = int(parent_duration * rng.uniform(0.2, 0.6))
        times.append((start, duration))
        failed = rng.random() < EXCEPTION_RATE
        status_code = 500 if failed else rng.choice((200, 200, 200, 200, 201, 404))
        name, attributes = _span_attributes(rng, step, service, peer, status_code, customer)
        span_id = rng.randbytes(8)
        span_ids.append(span_id)
        parent_id = span_ids[step.parent] if step.parent is not None else b""
        span = Span(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_id,
            name=name,
            kind=step.kind,  # type: ignore[arg-type]
            start_time_unix_nano=start,
            end_time_unix_nano=start + duration,
            attributes=_attributes(attributes),
        )
        if failed:
            error_type, message = rng.choice(_EXCEPTIONS)
            event = span.events.add()
            event.name = "exception"
            event.time_unix_nano = start + duration // 2
            event.attributes.extend(
                _attributes(
                    {
                        "exception.type": error_type,
                        "exception.message": message,
                        "exception.stacktrace": _stacktrace(service, error_type, message),
                    }
                )
            )
            span.status.CopyFrom(Status(code=_STATUS_ERROR, message=f"{error_type}: {message}"))  # type: ignore[arg-type]
        yield service, span


def trace_template(rng: random.Random, start_ns: int, spread_ns: int) -> PayloadTemplate:
    """A request of 100 traces (1,000 spans) starting between ``start_ns`` and +``spread_ns``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    by_service: dict[str, list[Any]] = {service: [] for service in SERVICES}
    starts = sorted(start_ns + rng.randrange(spread_ns) for _ in range(TRACES_PER_REQUEST))
    for flavor, trace_start in enumerate(starts):
        for service, span in _trace_spans(rng, trace_start, flavor):
            by_service[service].append(span)
    request = ExportTraceServiceRequest()
    for service, spans in by_service.items():
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(_resource(service))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = f"opentelemetry.instrumentation.{_LANGUAGES[service]}"
        scope_spans.scope.version = "0.48b0"
        scope_spans.spans.extend(spans)
    return _template(request, SPANS_PER_REQUEST)


# ---------------------------------------------------------------------------------------------
# Logs

# (severity number, text, weight)
_SEVERITIES = ((5, "DEBUG", 15), (9, "INFO", 70), (13, "WARN", 10), (17, "ERROR", 5))


def _log_body(rng: random.Random, severity: str, customer: str) -> str:
    order = rng.randrange(1, 10_000_000)
    if severity == "DEBUG":
        outcome = rng.choice(("hit", "miss"))
        return f"cache {outcome} for key product:SKU-{rng.randrange(10_000):05d}"
    if severity == "INFO":
        if rng.random() < 0.5:
            method, route = rng.choice(_ROUTES["frontend"])
            return f"{method} {route} -> 200 in {rng.randrange(2, 900)} ms (customer={customer})"
        return f"order {order} placed: {rng.randrange(1, 12)} items, total {rng.uniform(5, 500):.2f} EUR"
    if severity == "WARN":
        if rng.random() < 0.5:
            return f"slow query on {rng.choice(('orders', 'stock', 'users'))}: {rng.randrange(500, 5000)} ms"
        return f"retrying payment provider call for order {order} (attempt {rng.randrange(2, 5)})"
    if rng.random() < 0.1:  # 10% of the 5% of errors: the rare text the log search looks for
        return (
            f"{RARE_LOG_TEXT} detected on table orders; transaction for order {order} rolled back"
        )
    error_type, message = rng.choice(_EXCEPTIONS)
    return f"request failed for customer {customer}: {error_type}: {message}"


def log_template(rng: random.Random, start_ns: int, spread_ns: int) -> PayloadTemplate:
    """A request of 1,000 log records with times between ``start_ns`` and +``spread_ns``."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    request = ExportLogsServiceRequest()
    weights = [weight for _, _, weight in _SEVERITIES]
    per_service = LOGS_PER_REQUEST // len(SERVICES)
    for service in SERVICES:
        resource_logs = request.resource_logs.add()
        resource_logs.resource.CopyFrom(_resource(service))
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = f"{service}.app"
        for time_ns in sorted(start_ns + rng.randrange(spread_ns) for _ in range(per_service)):
            number, text, _ = rng.choices(_SEVERITIES, weights)[0]
            customer = f"cust-{rng.randrange(CUSTOMERS):05d}"
            record = LogRecord(
                time_unix_nano=time_ns,
                observed_time_unix_nano=time_ns + rng.randrange(100_000, 5_000_000),
                severity_number=number,  # type: ignore[arg-type]
                severity_text=text,
                attributes=_attributes(
                    {
                        "log.logger": f"{service}.handlers",
                        "thread.name": f"worker-{rng.randrange(16)}",
                        "code.function.name": rng.choice(("handle", "process", "commit")),
                        "app.customer.id": customer,
                    }
                ),
            )
            record.body.string_value = _log_body(rng, text, customer)
            if rng.random() < 0.6:
                record.trace_id = rng.randbytes(16)
                record.span_id = rng.randbytes(8)
            scope_logs.log_records.append(record)
    return _template(request, per_service * len(SERVICES))


# ---------------------------------------------------------------------------------------------
# Pools and streams


@dataclass(frozen=True)
class Pool:
    """Templates covering a time window: template k holds slot k of ``len(templates)``."""

    signal: str  # "traces" or "logs"
    templates: list[PayloadTemplate]
    slot_ns: int
    seed: int

    @property
    def records_per_request(self) -> int:
        return self.templates[0].records


def build_pool(signal: str, count: int, end_ns: int, window_ns: int, seed: int) -> Pool:
    """``count`` templates whose times, once rendered, fall in ``window_ns`` before ``end_ns``.

    Each template covers the first half of its slot; a send shifts it by up to half a slot.
    """
    rng = random.Random(f"{seed}:{signal}")
    slot = window_ns // count
    make = trace_template if signal == "traces" else log_template
    start = end_ns - window_ns
    templates = [make(rng, start + k * slot, max(slot // 2, 1)) for k in range(count)]
    return Pool(signal, templates, slot, seed)


class PayloadStream:
    """The requests one sender sends: templates in turn, each with fresh ids and times.

    Sender ``stream`` of ``streams`` takes templates stream, stream + streams, ... so that
    together the senders walk the pool evenly; the sequence is the same in every run.
    """

    def __init__(self, pool: Pool, stream: int, streams: int) -> None:
        self.pool = pool
        self.stream = stream
        self.streams = streams
        self.sent = 0
        self._rng = random.Random(f"{pool.seed}:{pool.signal}:{stream}")

    def next(self) -> tuple[bytes, int]:
        """The next request body and the number of records in it."""
        templates = self.pool.templates
        template = templates[(self.stream + self.sent * self.streams) % len(templates)]
        self.sent += 1
        key = self._rng.randbytes(24)
        shift = self._rng.randrange(max(self.pool.slot_ns // 2, 1))
        return template.render(key, shift), template.records
