"""OTLP request bodies -> column batches, one Arrow table per store table.

This is the ingest hot path: a decode worker spends most of its time here, and every field of
every record passes through it once. The code is shaped by what costs time in it:

- Reading a field of an upb-backed protobuf message is an attribute lookup that builds a new
  Python object (a string, or a wrapper for a sub-message), so each field is read once, per
  record, straight into that record's row, and values shared by a (resource, scope) run are
  computed once per run (:func:`_origin`) and repeated by Arrow.
- Attributes are most of a span. They become a dict of Python values with the fewest reads
  (:func:`_attribute_values`), whose JSON text comes from the json module's C encoder built
  once (:data:`_encode_chunks`); the same dict gives the hot columns (http.*, db.system).
- A record is one tuple added to a flat list, and the Arrow columns are slices of that list,
  converted once per request with the store's exact schema (:class:`_Rows`).
- Valid records pass one combined test; a record that fails it, or has events or links to
  check, goes through the full check, which names the first problem in a fixed order.

Records that cannot be stored faithfully (a trace id that is not 16 bytes, a timestamp past the
year 2262) are rejected one by one and counted, so the rest of the request is still stored and
the client gets a ``partial_success`` answer.
"""

from __future__ import annotations

import base64
import json
import json.encoder
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ophiond.errors import OphionError

if TYPE_CHECKING:
    import pyarrow as pa


class Signal(StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


class InvalidPayload(OphionError):
    """The request body cannot be decoded at all: HTTP 400 / gRPC INVALID_ARGUMENT."""


@dataclass
class DecodedBatch:
    """What one request became: Arrow tables to append, and what had to be rejected."""

    signal: Signal
    tables: Mapping[str, pa.Table]
    accepted: int
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    # The tables as Arrow IPC streams, when a decode worker already made them (the journal
    # stores these bytes as they are).
    streams: Mapping[str, bytes | memoryview] | None = None

    @property
    def message(self) -> str:
        """The ``partial_success.error_message`` for the client ('' when all was well)."""
        return "; ".join(self.problems)


# ---------------------------------------------------------------------------------------------
# Parsing the body: protobuf or OTLP/JSON

_REQUEST_TYPES: dict[Signal, tuple[str, str]] = {
    Signal.TRACES: (
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        "ExportTraceServiceRequest",
    ),
    Signal.METRICS: (
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        "ExportMetricsServiceRequest",
    ),
    Signal.LOGS: (
        "opentelemetry.proto.collector.logs.v1.logs_service_pb2",
        "ExportLogsServiceRequest",
    ),
}
_RESPONSE_TYPES: dict[Signal, str] = {
    Signal.TRACES: "ExportTraceServiceResponse",
    Signal.METRICS: "ExportMetricsServiceResponse",
    Signal.LOGS: "ExportLogsServiceResponse",
}


def _module(signal: Signal) -> Any:
    import importlib

    return importlib.import_module(_REQUEST_TYPES[signal][0])


def request_class(signal: Signal) -> Any:
    return getattr(_module(signal), _REQUEST_TYPES[signal][1])


def response_class(signal: Signal) -> Any:
    return getattr(_module(signal), _RESPONSE_TYPES[signal])


def parse_protobuf(signal: Signal, body: bytes) -> Any:
    """Decode a binary protobuf export request; raise :class:`InvalidPayload` when malformed."""
    from google.protobuf.message import DecodeError

    try:
        return request_class(signal).FromString(body)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise InvalidPayload(f"malformed protobuf {request_class(signal).__name__}: {e}") from e


# OTLP/JSON writes these ids as hex; protobuf's JSON mapping expects base64 for bytes fields.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise InvalidPayload(f"{key} {value[:40]!r} is not a hex string") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def parse_json(signal: Signal, body: bytes) -> Any:
    """Decode an OTLP/JSON export request (hex ids, integer enums, int64 as string or number)."""
    from google.protobuf import json_format

    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidPayload(f"invalid JSON: {e}") from e
    if not isinstance(document, dict):
        raise InvalidPayload("the JSON body must be an object")
    _hex_ids_to_base64(document)
    message = request_class(signal)()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise InvalidPayload(f"JSON does not match {type(message).__name__}: {e}") from e
    return message


def encode_response(signal: Signal, batch: DecodedBatch | None, as_json: bool) -> bytes:
    """The export response, with ``partial_success`` filled when something was rejected."""
    response = response_class(signal)()
    if batch is not None and (batch.rejected or batch.problems):
        partial = response.partial_success
        setattr(partial, f"rejected_{_REJECTED_FIELD[signal]}", batch.rejected)
        partial.error_message = batch.message
    if as_json:
        from google.protobuf import json_format

        text: str = json_format.MessageToJson(response, indent=None)
        return text.encode()
    data: bytes = response.SerializeToString()
    return data


_REJECTED_FIELD = {
    Signal.TRACES: "spans",
    Signal.METRICS: "data_points",
    Signal.LOGS: "log_records",
}


# ---------------------------------------------------------------------------------------------
# Values

_MAX_NS = 2**63 - 1


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as a JSON-ready Python value (bytes become base64 text)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return _json_double(value.double_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _json_double(x: float) -> float | str:
    # JSON has no NaN or Infinity; keep them as the strings DuckDB's JSON functions understand.
    return x if math.isfinite(x) else str(x)


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

# ``_json_encoder.encode`` builds a new C encoder on every call, which costs more than encoding
# a record's handful of attributes; this is the same C encoder with the same settings, built
# once. ``c_make_encoder`` is not public API, hence the fallback; circular-reference checks
# are off (``None``) because values decoded from protobuf are trees. tests/test_decode_fast.py
# holds the stored text against ``json.dumps`` with these settings, for every kind of value.
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_chunks: Callable[[Any, int], Iterable[str]] = (
    _make_c_encoder(
        None,
        _json_encoder.default,
        json.encoder.encode_basestring,  # what JSONEncoder picks when ensure_ascii is off
        None,
        _json_encoder.key_separator,
        _json_encoder.item_separator,
        _json_encoder.sort_keys,
        _json_encoder.skipkeys,
        _json_encoder.allow_nan,
    )
    if _make_c_encoder is not None
    else lambda value, _level: (_json_encoder.encode(value),)
)


def _to_json(value: Any) -> str:
    """JSON text of a JSON-ready value: the same text as ``_json_encoder.encode(value)``."""
    return "".join(_encode_chunks(value, 0))


def _attribute_values(key_values: Iterable[Any]) -> dict[str, Any]:
    """A KeyValue list as a dict of JSON-ready values (a repeated key: last value, first place).

    Same result as ``any_value`` per value, but most values are non-empty strings or integers:
    a oneof member that is not the one set reads as '' or 0, so a truthy ``string_value`` or
    ``int_value`` is the value itself, and only the rest ('' and 0 included) asks which kind
    it is. This saves a WhichOneof call and a function call on nearly every attribute.
    """
    return {
        kv.key: ((value := kv.value).string_value or value.int_value or any_value(value))
        for kv in key_values
    }


def _attributes_json(key_values: Iterable[Any]) -> str:
    """A KeyValue list as JSON object text."""
    return "".join(_encode_chunks(_attribute_values(key_values), 0))


# The span attributes copied into columns of their own; a span without any skips the lookups.
_HOT_KEYS = frozenset(
    {
        "http.request.method",
        "http.method",
        "http.route",
        "http.response.status_code",
        "http.status_code",
        "db.system.name",
        "db.system",
    }
)


def _hot_columns(values: dict[str, Any]) -> tuple[str | None, str | None, int | None, str | None]:
    """(http_method, http_route, http_status_code, db_system) from a span's attributes.

    The current semantic-convention name wins over the old one whenever it is present, even
    when its value has the wrong type and the column stays empty.
    """
    method = values.get("http.request.method", values.get("http.method"))
    route = values.get("http.route")
    status = values.get("http.response.status_code", values.get("http.status_code"))
    db_system = values.get("db.system.name", values.get("db.system"))
    return (
        method if isinstance(method, str) else None,
        route if isinstance(route, str) else None,
        _as_int(status),
        db_system if isinstance(db_system, str) else None,
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return None


# Proto3 enums are open: a value from a newer spec is kept as its number, not dropped.
# Every name is non-empty, so ``names.get(number) or str(number)`` is exact (the span loop
# writes it inline rather than calling _enum_name).
_KINDS = dict(enumerate(("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")))
_STATUS = dict(enumerate(("UNSET", "OK", "ERROR")))
_TEMPORALITY = dict(enumerate(("UNSPECIFIED", "DELTA", "CUMULATIVE")))


def _enum_name(names: dict[int, str], number: int) -> str:
    return names.get(number) or str(number)


def _hex_id(raw: bytes, size: int, what: str, required: bool) -> str | None:
    """Lowercase hex of an id of exactly ``size`` bytes; ``None`` when empty and optional."""
    if not raw:
        if required:
            raise _Reject(f"{what} is empty")
        return None
    if len(raw) != size:
        raise _Reject(f"{what} is {len(raw)} bytes, not {size}")
    return raw.hex()


def _ns(value: int, what: str) -> int:
    if value > _MAX_NS:
        raise _Reject(f"{what} {value} is past the largest storable time (year 2262)")
    return value


class _Reject(Exception):
    """One record cannot be stored; the message goes into partial_success."""


class _Problems:
    """Counts rejected records and keeps a few distinct reasons for the client."""

    def __init__(self) -> None:
        self.rejected = 0
        self.reasons: dict[str, int] = {}

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.note(reason)

    def note(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def messages(self, noun: str) -> list[str]:
        out = []
        for reason, count in list(self.reasons.items())[:5]:
            out.append(f"{count} {noun}: {reason}" if count > 1 else f"1 {noun}: {reason}")
        if len(self.reasons) > 5:
            out.append(f"and {len(self.reasons) - 5} more kinds of problem")
        return out


# ---------------------------------------------------------------------------------------------
# Records -> Arrow

# The columns that close the spans, logs and metric_points schemas, in the order of the tuple
# that _origin returns.
_ORIGIN_COLUMNS = (
    "service_name",
    "resource_attributes",
    "resource_dropped_attributes_count",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes",
    "scope_dropped_attributes_count",
    "scope_schema_url",
)


def _origin(resource_message: Any, scope_message: Any) -> tuple[Any, ...]:
    """The origin columns shared by every record of one (resource, scope) pair."""
    resource = resource_message.resource
    scope = scope_message.scope
    resource_values = _attribute_values(resource.attributes)
    service = resource_values.get("service.name")
    return (
        service if isinstance(service, str) else None,
        _to_json(resource_values),
        resource.dropped_attributes_count,
        resource_message.schema_url or None,
        scope.name or None,
        scope.version or None,
        _attributes_json(scope.attributes),
        scope.dropped_attributes_count,
        scope_message.schema_url or None,
    )


class _Rows:
    """One table being filled.

    The values are kept flat, record after record in schema order (one ``extend`` with a
    tuple per record, cheaper than an ``append`` per column), and column ``j`` is the slice
    ``values[j::width]`` at the end. The origin columns are not repeated per record: each
    (resource, scope) run keeps its origin tuple once, and Arrow repeats it.
    """

    def __init__(self, name: str, with_origin: bool = True) -> None:
        from ophiond.store.schema import arrow_schemas

        self.name = name
        self.schema = arrow_schemas()[name]
        self.width = len(self.schema) - (len(_ORIGIN_COLUMNS) if with_origin else 0)
        if with_origin and tuple(self.schema.names[self.width :]) != _ORIGIN_COLUMNS:
            raise AssertionError(f"the {name} schema does not end with the origin columns")
        self.values: list[Any] = []
        self.add = self.values.extend
        self.origins: list[tuple[Any, ...]] = []
        self.run_starts: list[int] = []

    def __len__(self) -> int:
        return len(self.values) // self.width

    def start_run(self, origin: tuple[Any, ...]) -> None:
        """The records added from now on come from ``origin``."""
        self.origins.append(origin)
        self.run_starts.append(len(self))

    def table(self) -> pa.Table:
        """The records as an Arrow table with exactly the store's schema."""
        import pyarrow as pa

        values, width, fields = self.values, self.width, list(self.schema)
        assert len(values) % width == 0, f"a {self.name} record is not {width} values"
        arrays = [pa.array(values[j::width], type=fields[j].type) for j in range(width)]
        if width < len(fields):
            counts = [end - start for start, end in pairwise([*self.run_starts, len(self)])]
            for j, f in enumerate(fields[width:]):
                if pa.types.is_dictionary(f.type):
                    arrays.append(self._dictionary_column(j, counts, f.type))
                    continue
                runs = [
                    pa.repeat(pa.scalar(origin[j], type=f.type), count)
                    for origin, count in zip(self.origins, counts, strict=True)
                ]
                arrays.append(pa.concat_arrays(runs) if runs else pa.array([], type=f.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _dictionary_column(self, j: int, counts: list[int], type_: pa.DataType) -> pa.Array:
        """Origin column ``j`` with one dictionary entry per run: the resource attributes of a
        run are kept once, not once per record (a third of a span batch's bytes otherwise)."""
        import pyarrow as pa

        index = pa.int32()
        runs = [
            pa.repeat(pa.scalar(None if origin[j] is None else i, type=index), count)
            for i, (origin, count) in enumerate(zip(self.origins, counts, strict=True))
        ]
        indices = pa.concat_arrays(runs) if runs else pa.array([], type=index)
        dictionary = pa.array(["" if o[j] is None else o[j] for o in self.origins], pa.string())
        return pa.DictionaryArray.from_arrays(indices, dictionary).cast(type_)


# ---------------------------------------------------------------------------------------------
# Traces


def _check_span(span: Any) -> None:
    """Raise :class:`_Reject` with the first reason a span cannot be stored, if any."""
    _hex_id(span.trace_id, 16, "trace_id", required=True)
    _hex_id(span.span_id, 8, "span_id", required=True)
    _hex_id(span.parent_span_id, 8, "parent_span_id", required=False)
    _ns(span.start_time_unix_nano, "start_time_unix_nano")
    _ns(span.end_time_unix_nano, "end_time_unix_nano")
    for link in span.links:
        _hex_id(link.trace_id, 16, "link trace_id", required=True)
        _hex_id(link.span_id, 8, "link span_id", required=True)
    for event in span.events:
        _ns(event.time_unix_nano, "event time_unix_nano")


def decode_traces(request: Any) -> DecodedBatch:
    """Flatten an ExportTraceServiceRequest into spans, span_events and span_links tables."""
    spans = _Rows("spans")
    events = _Rows("span_events", with_origin=False)
    links = _Rows("span_links", with_origin=False)
    add_span, add_event, add_link = spans.add, events.add, links.add
    problems = _Problems()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            origin = _origin(resource_spans, scope_spans)
            spans.start_run(origin)
            service = origin[0]
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                span_events = span.events
                span_links = span.links
                # A valid span without events or links (nearly all of them) passes this one
                # test; the others take the full check, which names the first problem.
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or (parent and len(parent) != 8)
                    or start > _MAX_NS
                    or end > _MAX_NS
                    or span_events
                    or span_links
                ):
                    try:
                        _check_span(span)
                    except _Reject as reason:
                        problems.reject(str(reason))
                        continue
                if end < start:
                    problems.note("ends before it starts; stored with duration 0")
                trace_hex = trace_id.hex()
                span_hex = span_id.hex()
                name = span.name
                values = _attribute_values(span.attributes)
                method = route = http_status = db_system = None
                if not _HOT_KEYS.isdisjoint(values):
                    method, route, http_status, db_system = _hot_columns(values)
                kind = span.kind
                status = span.status
                code = status.code
                add_span(
                    (
                        trace_hex,
                        span_hex,
                        parent.hex() if parent else None,
                        span.trace_state or None,
                        span.flags,
                        name,
                        _KINDS.get(kind) or str(kind),
                        start,
                        end,
                        end - start if end > start else 0,
                        _STATUS.get(code) or str(code),
                        status.message or None,
                        method,
                        route,
                        http_status,
                        db_system,
                        "".join(_encode_chunks(values, 0)),
                        span.dropped_attributes_count,
                        span.dropped_events_count,
                        span.dropped_links_count,
                    )
                )
                # Looping over an empty repeated field still costs an iterator; skip it.
                if span_events:
                    for event in span_events:
                        add_event(
                            (
                                trace_hex,
                                span_hex,
                                name,
                                event.time_unix_nano,
                                event.name,
                                _attributes_json(event.attributes),
                                event.dropped_attributes_count,
                                service,
                            )
                        )
                if span_links:
                    for link in span_links:
                        add_link(
                            (
                                trace_hex,
                                span_hex,
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                link.trace_state or None,
                                link.flags,
                                _attributes_json(link.attributes),
                                link.dropped_attributes_count,
                                service,
                            )
                        )
    tables = {"spans": spans.table()}
    if len(events):
        tables["span_events"] = events.table()
    if len(links):
        tables["span_links"] = links.table()
    return DecodedBatch(
        Signal.TRACES, tables, len(spans), problems.rejected, problems.messages("span")
    )


# ---------------------------------------------------------------------------------------------
# Logs

_BODY_TYPES = {
    "string_value": "string",
    "int_value": "int",
    "double_value": "double",
    "bool_value": "bool",
    "array_value": "array",
    "kvlist_value": "kvlist",
    "bytes_value": "bytes",
}


def _body(value: Any) -> tuple[str | None, str | None]:
    """(text, type) of a log body: strings as they are, other types as JSON text."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None, None
    if kind == "string_value":
        return value.string_value, "string"
    return _to_json(any_value(value)), _BODY_TYPES[kind]


def _check_log(record: Any) -> None:
    """Raise :class:`_Reject` with the first reason a log record cannot be stored, if any."""
    _hex_id(record.trace_id, 16, "trace_id", required=False)
    _hex_id(record.span_id, 8, "span_id", required=False)
    _ns(record.observed_time_unix_nano, "observed_time_unix_nano")
    _ns(record.time_unix_nano, "time_unix_nano")


def decode_logs(request: Any, received_ns: int) -> DecodedBatch:
    """Flatten an ExportLogsServiceRequest into the logs table.

    A record without a time takes its observed time; one without either takes the arrival
    time as observed time (ophiond is then the collector that observed it).
    """
    logs = _Rows("logs")
    add_log = logs.add
    problems = _Problems()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            logs.start_run(_origin(resource_logs, scope_logs))
            for record in scope_logs.log_records:
                trace_id = record.trace_id
                span_id = record.span_id
                observed = record.observed_time_unix_nano
                time_ns = record.time_unix_nano
                # As for spans: one test for the valid records, the full check for the rest.
                if (
                    (trace_id and len(trace_id) != 16)
                    or (span_id and len(span_id) != 8)
                    or observed > _MAX_NS
                    or time_ns > _MAX_NS
                ):
                    try:
                        _check_log(record)
                    except _Reject as reason:
                        problems.reject(str(reason))
                        continue
                observed = observed or received_ns
                body = record.body
                text: str | None = body.string_value
                body_type: str | None = "string"
                if not text:  # not a string, or an empty one, or no body
                    text, body_type = _body(body)
                add_log(
                    (
                        time_ns or observed,
                        observed,
                        record.severity_number,
                        record.severity_text or None,
                        text,
                        body_type,
                        trace_id.hex() if trace_id else None,
                        span_id.hex() if span_id else None,
                        record.flags,
                        record.event_name or None,
                        _attributes_json(record.attributes),
                        record.dropped_attributes_count,
                    )
                )
    return DecodedBatch(
        Signal.LOGS,
        {"logs": logs.table()},
        len(logs),
        problems.rejected,
        problems.messages("log record"),
    )


# ---------------------------------------------------------------------------------------------
# Metrics

# The value columns of a data point, in schema order; each kind of point fills some of them.
_POINT_DEFAULTS: dict[str, Any] = {
    "value": None,
    "value_int": None,
    "count": None,
    "sum": None,
    "min": None,
    "max": None,
    "bucket_counts": None,
    "explicit_bounds": None,
    "scale": None,
    "zero_count": None,
    "zero_threshold": None,
    "positive_offset": None,
    "positive_bucket_counts": None,
    "negative_offset": None,
    "negative_bucket_counts": None,
    "quantiles": None,
    "quantile_values": None,
}


def _exemplars(point: Any) -> str | None:
    if not point.exemplars:
        return None
    out = []
    for exemplar in point.exemplars:
        kind = exemplar.WhichOneof("value")
        try:
            trace_id = _hex_id(exemplar.trace_id, 16, "exemplar trace_id", required=False)
            span_id = _hex_id(exemplar.span_id, 8, "exemplar span_id", required=False)
        except _Reject:
            # An exemplar is a hint attached to a good point; keep the point and its value.
            trace_id = span_id = None
        out.append(
            {
                "time_unix_nano": exemplar.time_unix_nano,
                "value": exemplar.as_int if kind == "as_int" else _json_double(exemplar.as_double),
                "trace_id": trace_id,
                "span_id": span_id,
                "filtered_attributes": _attribute_values(exemplar.filtered_attributes),
            }
        )
    return _to_json(out)


def _number_point(point: Any) -> dict[str, Any]:
    kind = point.WhichOneof("value")
    if kind == "as_int":
        return {"value": float(point.as_int), "value_int": point.as_int}
    if kind == "as_double":
        return {"value": point.as_double}
    return {}


def _histogram_point(point: Any) -> dict[str, Any]:
    return {
        "count": point.count,
        "sum": point.sum if point.HasField("sum") else None,
        "min": point.min if point.HasField("min") else None,
        "max": point.max if point.HasField("max") else None,
        "bucket_counts": list(point.bucket_counts),
        "explicit_bounds": list(point.explicit_bounds),
    }


def _exponential_point(point: Any) -> dict[str, Any]:
    return {
        "count": point.count,
        "sum": point.sum if point.HasField("sum") else None,
        "min": point.min if point.HasField("min") else None,
        "max": point.max if point.HasField("max") else None,
        "scale": point.scale,
        "zero_count": point.zero_count,
        "zero_threshold": point.zero_threshold,
        "positive_offset": point.positive.offset,
        "positive_bucket_counts": list(point.positive.bucket_counts),
        "negative_offset": point.negative.offset,
        "negative_bucket_counts": list(point.negative.bucket_counts),
    }


def _summary_point(point: Any) -> dict[str, Any]:
    return {
        "count": point.count,
        "sum": point.sum,
        "quantiles": [q.quantile for q in point.quantile_values],
        "quantile_values": [q.value for q in point.quantile_values],
    }


_METRIC_KINDS: dict[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "gauge": ("gauge", _number_point),
    "sum": ("sum", _number_point),
    "histogram": ("histogram", _histogram_point),
    "exponential_histogram": ("exponential_histogram", _exponential_point),
    "summary": ("summary", _summary_point),
}


def decode_metrics(request: Any) -> DecodedBatch:
    """Flatten an ExportMetricsServiceRequest into metric_points, one row per data point."""
    points = _Rows("metric_points")
    add_point = points.add
    problems = _Problems()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            points.start_run(_origin(resource_metrics, scope_metrics))
            for metric in scope_metrics.metrics:
                data_kind = metric.WhichOneof("data")
                if data_kind is None:
                    problems.note(f"metric {metric.name!r} has no data; nothing stored for it")
                    continue
                metric_type, point_fields = _METRIC_KINDS[data_kind]
                data = getattr(metric, data_kind)
                temporality = (
                    _enum_name(_TEMPORALITY, data.aggregation_temporality)
                    if data_kind in ("sum", "histogram", "exponential_histogram")
                    else None
                )
                monotonic = data.is_monotonic if data_kind == "sum" else None
                metadata = _attributes_json(metric.metadata) if metric.metadata else None
                for point in data.data_points:
                    try:
                        start = _ns(point.start_time_unix_nano, "start_time_unix_nano")
                        time_ns = _ns(point.time_unix_nano, "time_unix_nano")
                    except _Reject as reason:
                        problems.reject(str(reason))
                        continue
                    values = dict(_POINT_DEFAULTS)
                    values.update(point_fields(point))
                    add_point(
                        (
                            metric.name,
                            metric.description or None,
                            metric.unit or None,
                            metric_type,
                            temporality,
                            monotonic,
                            metadata,
                            start or None,
                            time_ns,
                            _attributes_json(point.attributes),
                            *values.values(),
                            point.flags,
                            _exemplars(point) if data_kind != "summary" else None,
                        )
                    )
    return DecodedBatch(
        Signal.METRICS,
        {"metric_points": points.table()},
        len(points),
        problems.rejected,
        problems.messages("data point"),
    )


def decode(signal: Signal, request: Any, received_ns: int) -> DecodedBatch:
    """Flatten a parsed export request of any signal."""
    if signal is Signal.TRACES:
        return decode_traces(request)
    if signal is Signal.LOGS:
        return decode_logs(request, received_ns)
    return decode_metrics(request)
