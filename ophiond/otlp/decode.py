"""OTLP request bodies -> column batches, one Arrow table per store table.

This is the ingest hot path. Each field is read once, per request, straight into column lists;
per-resource and per-scope values are computed once and repeated. Records that cannot be stored
faithfully (a trace id that is not 16 bytes, a timestamp past the year 2262) are rejected one by
one and counted, so the rest of the request is still stored and the client gets a
``partial_success`` answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
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
    tables: dict[str, pa.Table]
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


def attributes_json(key_values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """A KeyValue list as a JSON object text, plus the dict (for hot-column extraction)."""
    values = {kv.key: any_value(kv.value) for kv in key_values}
    return _json_encoder.encode(values), values


_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS = ("UNSET", "OK", "ERROR")
_TEMPORALITY = ("UNSPECIFIED", "DELTA", "CUMULATIVE")


def _enum_name(names: tuple[str, ...], number: int) -> str:
    # Proto3 enums are open: a value from a newer spec is kept as its number, not dropped.
    return names[number] if 0 <= number < len(names) else str(number)


def _hex_id(raw: bytes, size: int, what: str, required: bool) -> str | None:
    """Lowercase hex of an id of exactly ``size`` bytes; ``None`` when empty and optional."""
    if not raw:
        if required:
            raise _Reject(f"{what} is empty")
        return None
    if len(raw) != size:
        raise _Reject(f"{what} is {len(raw)} bytes, not {size}")
    return binascii.hexlify(raw).decode()


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


def _resource_columns(resource_message: Any, scope_message: Any) -> dict[str, Any]:
    resource = resource_message.resource
    scope = scope_message.scope
    resource_json, resource_values = attributes_json(resource.attributes)
    service = resource_values.get("service.name")
    return {
        "service_name": service if isinstance(service, str) else None,
        "resource_attributes": resource_json,
        "resource_dropped_attributes_count": resource.dropped_attributes_count,
        "resource_schema_url": resource_message.schema_url or None,
        "scope_name": scope.name or None,
        "scope_version": scope.version or None,
        "scope_attributes": attributes_json(scope.attributes)[0],
        "scope_dropped_attributes_count": scope.dropped_attributes_count,
        "scope_schema_url": scope_message.schema_url or None,
    }


def _table(name: str, columns: dict[str, list[Any]]) -> pa.Table:
    import pyarrow as pa

    from ophiond.store.schema import arrow_schemas

    schema = arrow_schemas()[name]
    return pa.Table.from_pydict({f.name: columns[f.name] for f in schema}, schema=schema)


def _new_columns(name: str) -> dict[str, list[Any]]:
    from ophiond.store.schema import arrow_schemas

    return {f.name: [] for f in arrow_schemas()[name]}


def _first(values: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in values:
            return values[key]
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------
# Traces


def decode_traces(request: Any) -> DecodedBatch:
    """Flatten an ExportTraceServiceRequest into spans, span_events and span_links tables."""
    spans, events, links = (
        _new_columns("spans"),
        _new_columns("span_events"),
        _new_columns("span_links"),
    )
    problems = _Problems()
    accepted = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            origin = _resource_columns(resource_spans, scope_spans)
            service = origin["service_name"]
            for span in scope_spans.spans:
                try:
                    trace_id = _hex_id(span.trace_id, 16, "trace_id", required=True)
                    span_id = _hex_id(span.span_id, 8, "span_id", required=True)
                    parent = _hex_id(span.parent_span_id, 8, "parent_span_id", required=False)
                    start = _ns(span.start_time_unix_nano, "start_time_unix_nano")
                    end = _ns(span.end_time_unix_nano, "end_time_unix_nano")
                    span_links = [
                        (
                            _hex_id(link.trace_id, 16, "link trace_id", required=True),
                            _hex_id(link.span_id, 8, "link span_id", required=True),
                            link,
                        )
                        for link in span.links
                    ]
                    span_events = [
                        (_ns(e.time_unix_nano, "event time_unix_nano"), e) for e in span.events
                    ]
                except _Reject as reason:
                    problems.reject(str(reason))
                    continue
                if end < start:
                    problems.note("ends before it starts; stored with duration 0")
                attrs_json, attrs = attributes_json(span.attributes)
                spans["trace_id"].append(trace_id)
                spans["span_id"].append(span_id)
                spans["parent_span_id"].append(parent)
                spans["trace_state"].append(span.trace_state or None)
                spans["flags"].append(span.flags)
                spans["name"].append(span.name)
                spans["kind"].append(_enum_name(_KINDS, span.kind))
                spans["start_time"].append(start)
                spans["end_time"].append(end)
                spans["duration_ns"].append(max(0, end - start))
                spans["status_code"].append(_enum_name(_STATUS, span.status.code))
                spans["status_message"].append(span.status.message or None)
                spans["http_method"].append(
                    _as_str(_first(attrs, "http.request.method", "http.method"))
                )
                spans["http_route"].append(_as_str(attrs.get("http.route")))
                spans["http_status_code"].append(
                    _as_int(_first(attrs, "http.response.status_code", "http.status_code"))
                )
                spans["db_system"].append(_as_str(_first(attrs, "db.system.name", "db.system")))
                spans["attributes"].append(attrs_json)
                spans["dropped_attributes_count"].append(span.dropped_attributes_count)
                spans["dropped_events_count"].append(span.dropped_events_count)
                spans["dropped_links_count"].append(span.dropped_links_count)
                for key, value in origin.items():
                    spans[key].append(value)
                for time_ns, event in span_events:
                    events["trace_id"].append(trace_id)
                    events["span_id"].append(span_id)
                    events["span_name"].append(span.name)
                    events["time"].append(time_ns)
                    events["name"].append(event.name)
                    events["attributes"].append(attributes_json(event.attributes)[0])
                    events["dropped_attributes_count"].append(event.dropped_attributes_count)
                    events["service_name"].append(service)
                for linked_trace, linked_span, link in span_links:
                    links["trace_id"].append(trace_id)
                    links["span_id"].append(span_id)
                    links["linked_trace_id"].append(linked_trace)
                    links["linked_span_id"].append(linked_span)
                    links["trace_state"].append(link.trace_state or None)
                    links["flags"].append(link.flags)
                    links["attributes"].append(attributes_json(link.attributes)[0])
                    links["dropped_attributes_count"].append(link.dropped_attributes_count)
                    links["service_name"].append(service)
                accepted += 1
    tables = {"spans": _table("spans", spans)}
    if events["trace_id"]:
        tables["span_events"] = _table("span_events", events)
    if links["trace_id"]:
        tables["span_links"] = _table("span_links", links)
    return DecodedBatch(
        Signal.TRACES, tables, accepted, problems.rejected, problems.messages("span")
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
    return _json_encoder.encode(any_value(value)), _BODY_TYPES[kind]


def decode_logs(request: Any, received_ns: int) -> DecodedBatch:
    """Flatten an ExportLogsServiceRequest into the logs table.

    A record without a time takes its observed time; one without either takes the arrival
    time as observed time (ophiond is then the collector that observed it).
    """
    logs = _new_columns("logs")
    problems = _Problems()
    accepted = 0
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            origin = _resource_columns(resource_logs, scope_logs)
            for record in scope_logs.log_records:
                try:
                    trace_id = _hex_id(record.trace_id, 16, "trace_id", required=False)
                    span_id = _hex_id(record.span_id, 8, "span_id", required=False)
                    observed = (
                        _ns(record.observed_time_unix_nano, "observed_time_unix_nano")
                        or received_ns
                    )
                    time_ns = _ns(record.time_unix_nano, "time_unix_nano") or observed
                except _Reject as reason:
                    problems.reject(str(reason))
                    continue
                body, body_type = _body(record.body)
                logs["timestamp"].append(time_ns)
                logs["observed_timestamp"].append(observed)
                logs["severity_number"].append(record.severity_number)
                logs["severity_text"].append(record.severity_text or None)
                logs["body"].append(body)
                logs["body_type"].append(body_type)
                logs["trace_id"].append(trace_id)
                logs["span_id"].append(span_id)
                logs["flags"].append(record.flags)
                logs["event_name"].append(record.event_name or None)
                logs["attributes"].append(attributes_json(record.attributes)[0])
                logs["dropped_attributes_count"].append(record.dropped_attributes_count)
                for key, value in origin.items():
                    logs[key].append(value)
                accepted += 1
    return DecodedBatch(
        Signal.LOGS,
        {"logs": _table("logs", logs)},
        accepted,
        problems.rejected,
        problems.messages("log record"),
    )


# ---------------------------------------------------------------------------------------------
# Metrics

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
                "filtered_attributes": {
                    kv.key: any_value(kv.value) for kv in exemplar.filtered_attributes
                },
            }
        )
    return _json_encoder.encode(out)


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
    points = _new_columns("metric_points")
    problems = _Problems()
    accepted = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            origin = _resource_columns(resource_metrics, scope_metrics)
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
                metadata = attributes_json(metric.metadata)[0] if metric.metadata else None
                for point in data.data_points:
                    try:
                        start = _ns(point.start_time_unix_nano, "start_time_unix_nano")
                        time_ns = _ns(point.time_unix_nano, "time_unix_nano")
                    except _Reject as reason:
                        problems.reject(str(reason))
                        continue
                    row = dict(_POINT_DEFAULTS)
                    row.update(point_fields(point))
                    points["metric_name"].append(metric.name)
                    points["description"].append(metric.description or None)
                    points["unit"].append(metric.unit or None)
                    points["metric_type"].append(metric_type)
                    points["temporality"].append(temporality)
                    points["is_monotonic"].append(monotonic)
                    points["metadata"].append(metadata)
                    points["start_time"].append(start or None)
                    points["timestamp"].append(time_ns)
                    points["attributes"].append(attributes_json(point.attributes)[0])
                    for key, value in row.items():
                        points[key].append(value)
                    points["flags"].append(point.flags)
                    points["exemplars"].append(
                        _exemplars(point) if data_kind != "summary" else None
                    )
                    for key, value in origin.items():
                        points[key].append(value)
                    accepted += 1
    return DecodedBatch(
        Signal.METRICS,
        {"metric_points": _table("metric_points", points)},
        accepted,
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
