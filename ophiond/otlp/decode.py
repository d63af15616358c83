"""OTLP request bodies -> column batches, one Arrow table per store table.

This is the ingest hot path: a decode worker spends most of its time here, and every field of
every record passes through it once. The code is shaped by what costs time in it:

- Reading a field of an upb-backed protobuf message is an attribute lookup that builds a new
  Python object (a string, or a wrapper for a sub-message), so each field is read once, per
  record, straight into that record's row, and values shared by a (resource, scope) run are
  computed once per run (:func:`_origin`) and repeated by Arrow.
- Attributes are most of a span. They become a dict of Python values with the fewest reads
  (``values.attribute_values``), whose JSON text comes from the json module's C encoder built
  once (``values.encode_chunks``); the same dict gives the hot columns (http.*, db.system).
- A record is one tuple added to a flat list, and the Arrow columns are slices of that list,
  converted once per request with the store's exact schema (:class:`_Rows`).
- Valid records pass one combined test; a record that fails it, or has events or links to
  check, goes through the full check, which names the first problem in a fixed order.

Records that cannot be stored faithfully (a trace id that is not 16 bytes, a timestamp past the
year 2262) are rejected one by one and counted, so the rest of the request is still stored and
the client gets a ``partial_success`` answer. Values past the limits (``limits.py``) are stored
cut, with a marker, and noted in the same answer: a record whose attribute JSON is longer than
a quarter of a limit, or that nests too deep, is read again by ``values.ValueBounds``; the
others pay one ``len`` per attribute list. The other strings (names, messages, units...) are
not measured one by one: each such column of the finished table is, in one C pass at most
(:meth:`_Rows.table`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ophiond.errors import InvalidPayload
from ophiond.model import DEFAULT_LIMITS, DecodedBatch, IngestLimits, Signal
from ophiond.otlp.limits import MAX_NESTING, cut_long_strings, prune_deep_values
from ophiond.otlp.values import (
    TooDeep,
    ValueBounds,
    attribute_values,
    attributes_json,
    encode_chunks,
    json_double,
    shown,
    to_json,
)

if TYPE_CHECKING:
    import pyarrow as pa


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

    request_type = request_class(signal)
    try:
        return request_type.FromString(body)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        error = e
    # The parser refuses a whole request for one value nested past its depth limit; with the
    # too-deep values emptied (the decoder marks them), the rest of the request is stored.
    if "MaxDepth" in str(error):
        pruned = prune_deep_values(body, request_type.DESCRIPTOR)
        if pruned is not None:
            try:
                return request_type.FromString(pruned)
            except (DecodeError, RuntimeWarning, ValueError):
                pass  # malformed in another way too: the first error says what
    raise InvalidPayload(f"malformed protobuf {request_type.__name__}: {error}") from error


# OTLP/JSON writes these ids as hex; protobuf's JSON mapping expects base64 for bytes fields.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
# The AnyValue fields that nest values.
_CONTAINER_KEYS = frozenset({"arrayValue", "array_value", "kvlistValue", "kvlist_value"})


@dataclass(frozen=True)
class _EnumField:
    """An enum field of OTLP/JSON: the names it takes, and what an unknown name becomes."""

    enum: str
    names: frozenset[str]
    stored_as: str


def _enum_fields(signal: Signal) -> dict[str, _EnumField]:
    """The enum fields of ``signal``'s JSON, by JSON key (both spellings protobuf accepts)."""

    def field(enum_type: Any, stored_as: str) -> _EnumField:
        names = frozenset(enum_type.DESCRIPTOR.values_by_name)
        return _EnumField(enum_type.DESCRIPTOR.name, names, stored_as)

    if signal is Signal.TRACES:
        from opentelemetry.proto.trace.v1 import trace_pb2

        return {
            "kind": field(trace_pb2.Span.SpanKind, "UNSPECIFIED"),
            "code": field(trace_pb2.Status.StatusCode, "UNSET"),
        }
    if signal is Signal.LOGS:
        from opentelemetry.proto.logs.v1 import logs_pb2

        severity = field(logs_pb2.SeverityNumber, "0")
        return {"severityNumber": severity, "severity_number": severity}
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    temporality = field(metrics_pb2.AggregationTemporality, "UNSPECIFIED")
    return {"aggregationTemporality": temporality, "aggregation_temporality": temporality}


def _prepare_json(node: Any, enums: dict[str, _EnumField], notes: list[str], levels: int) -> None:
    """Make an OTLP/JSON document what protobuf's JSON parser takes, in place.

    Hex ids become base64. An array or kvlist nested past :data:`MAX_NESTING` levels is
    emptied (``levels`` counts those around ``node``): the decoder stores the marker for it,
    and the parser does not refuse the whole request as too deep. An enum name that is not one
    (the parser would quietly read it as 0) is noted in ``notes``, once per record it affects.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise InvalidPayload(f"{key} {value[:40]!r} is not a hex string") from None
            elif key in _CONTAINER_KEYS and isinstance(value, dict):
                if levels < MAX_NESTING:
                    _prepare_json(value, enums, notes, levels + 1)
                else:
                    node[key] = {}
            elif key in enums and isinstance(value, str):
                enum = enums[key]
                if value not in enum.names and not value.lstrip("-").isdigit():
                    # A metric's temporality applies to each of its points.
                    points = node.get("dataPoints", node.get("data_points"))
                    count = len(points) if isinstance(points, list) else 1
                    notes += count * [
                        f"{key} {value[:40]!r} is not a name in {enum.enum}; "
                        f"stored as {enum.stored_as}"
                    ]
            else:
                _prepare_json(value, enums, notes, levels)
    elif isinstance(node, list):
        for item in node:
            _prepare_json(item, enums, notes, levels)


def parse_json(signal: Signal, body: bytes, notes: list[str]) -> Any:
    """Decode an OTLP/JSON export request (hex ids, integer enums, int64 as string or number).

    What the decoder should tell the client about the request (an enum name that is not one)
    is added to ``notes``.
    """
    from google.protobuf import json_format

    message = request_class(signal)()
    try:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidPayload(f"invalid JSON: {e}") from e
        if not isinstance(document, dict):
            raise InvalidPayload("the JSON body must be an object")
        _prepare_json(document, _enum_fields(signal), notes, 0)
        try:
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError) as e:
            raise InvalidPayload(f"JSON does not match {type(message).__name__}: {e}") from e
    except RecursionError:
        # Python's parser, or the walks over the document, ran out of stack.
        raise InvalidPayload("the JSON body is nested too deeply to read") from None
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
# Hot columns, enums, ids and times

_MAX_NS = 2**63 - 1


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

    def __init__(self, notes: Iterable[str] = ()) -> None:
        self.rejected = 0
        self.reasons: dict[str, int] = {}
        for reason in notes:
            self.note(reason)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.note(reason)

    def note(self, reason: str, records: int = 1) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + records

    def messages(self, noun: str) -> list[str]:
        out = []
        for reason, count in list(self.reasons.items())[:5]:
            out.append(f"{count} {noun}s: {reason}" if count > 1 else f"1 {noun}: {reason}")
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


def _origin(resource_message: Any, scope_message: Any, bounds: ValueBounds) -> tuple[Any, ...]:
    """The origin columns shared by every record of one (resource, scope) pair."""
    resource = resource_message.resource
    scope = scope_message.scope
    resource_values, resource_attributes, resource_dropped = bounds.attributes(
        resource.attributes, resource.dropped_attributes_count, "resource attribute"
    )
    _, scope_attributes, scope_dropped = bounds.attributes(
        scope.attributes, scope.dropped_attributes_count, "scope attribute"
    )
    service = resource_values.get("service.name")
    return (
        service if isinstance(service, str) else None,
        resource_attributes,
        resource_dropped,
        resource_message.schema_url or None,
        scope.name or None,
        scope.version or None,
        scope_attributes,
        scope_dropped,
        scope_message.schema_url or None,
    )


# The string columns whose values are bounded as they are read: ids are the hex of a fixed
# number of bytes, enums are names, a log body has its own limit, the hot columns and service
# names are attribute values (cut), and the attribute JSON (also metadata and exemplars) is
# bounded value by value by ValueBounds (cutting the text would break the JSON). Every other
# string column is checked as a whole once the table is built (_Rows.table), so that a column
# added to a schema is bounded without anyone thinking of it.
_BOUNDED_AS_READ = frozenset(
    {
        "trace_id",
        "span_id",
        "parent_span_id",
        "linked_trace_id",
        "linked_span_id",
        "kind",
        "status_code",
        "body_type",
        "metric_type",
        "temporality",
        "body",
        "http_method",
        "http_route",
        "db_system",
        "service_name",
        "attributes",
        "resource_attributes",
        "scope_attributes",
        "metadata",
        "exemplars",
    }
)

# How the client's note names the field of a checked column (by default, the column's name).
# None: a copy of a field noted in another table (a span's name, repeated by its events), cut
# the same way without a note of its own.
_FIELD_NAMES: dict[tuple[str, str], str | None] = {
    ("spans", "status_message"): "status message",
    ("span_events", "span_name"): None,
    ("span_events", "name"): "event name",
    ("span_links", "trace_state"): "link trace_state",
    ("logs", "severity_text"): "severity text",
    ("logs", "event_name"): "event name",
    ("metric_points", "metric_name"): "metric name",
    ("metric_points", "description"): "metric description",
    ("metric_points", "unit"): "metric unit",
}
_ORIGIN_FIELD_NAMES = {
    "resource_schema_url": "resource schema_url",
    "scope_name": "scope name",
    "scope_version": "scope version",
    "scope_schema_url": "scope schema_url",
}
_CHECKED: dict[str, list[tuple[int, str | None]]] = {}


def _checked_columns(name: str, schema: pa.Schema) -> list[tuple[int, str | None]]:
    """(position, field name for the note) of each column of table ``name`` that
    :meth:`_Rows.table` checks for values past ``max_attribute_value_size``."""
    checked = _CHECKED.get(name)
    if checked is None:
        import pyarrow as pa

        checked = []
        for i, f in enumerate(schema):
            value_type = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
            if pa.types.is_string(value_type) and f.name not in _BOUNDED_AS_READ:
                default = _ORIGIN_FIELD_NAMES.get(f.name, f.name)
                checked.append((i, _FIELD_NAMES.get((name, f.name), default)))
        _CHECKED[name] = checked
    return checked


class _Rows:
    """One table being filled.

    The values are kept flat, record after record in schema order (one ``extend`` with a
    tuple per record, cheaper than an ``append`` per column), and column ``j`` is the slice
    ``values[j::width]`` at the end. The origin columns are not repeated per record: each
    (resource, scope) run keeps its origin tuple once, and Arrow repeats it.
    """

    def __init__(self, name: str, with_origin: bool = True) -> None:
        from ophiond.model import arrow_schemas

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

    def table(self, limit: int, note: Callable[[str, int], None]) -> pa.Table:
        """The records as an Arrow table with exactly the store's schema, each string not
        bounded as it was read cut to ``limit`` bytes; ``note`` (reason, records) tells the
        client what was cut."""
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
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        # Measured here, a column at a time, rather than as each field is read: nearly every
        # column's buffers are smaller than the limit, which answers for all of its values.
        for i, field_name in _checked_columns(self.name, self.schema):
            cut = cut_long_strings(table.column(i), limit)
            if cut is not None:
                column, records = cut
                table = table.set_column(i, fields[i], column)
                if field_name is not None:
                    note(
                        f"{field_name} longer than {limit} bytes; cut (max_attribute_value_size)",
                        records,
                    )
        return table

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


def decode_traces(
    request: Any, limits: IngestLimits = DEFAULT_LIMITS, notes: Iterable[str] = ()
) -> DecodedBatch:
    """Flatten an ExportTraceServiceRequest into spans, span_events and span_links tables.

    ``notes`` are what parsing found to tell the client (see :func:`parse_json`).
    """
    spans = _Rows("spans")
    events = _Rows("span_events", with_origin=False)
    links = _Rows("span_links", with_origin=False)
    add_span, add_event, add_link = spans.add, events.add, links.add
    problems = _Problems(notes)
    bounds = ValueBounds(limits, problems.note)
    fits = bounds.fits
    max_events, max_links = limits.events_per_span, limits.links_per_span
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            origin = _origin(resource_spans, scope_spans, bounds)
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
                dropped_events = span.dropped_events_count
                dropped_links = span.dropped_links_count
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
                    # Past the limits, the first ones are kept, as the SDKs' span limits do.
                    if len(span_events) > max_events:
                        dropped_events += len(span_events) - max_events
                        span_events = span_events[:max_events]
                        problems.note(f"events past {max_events} dropped (max_span_events)")
                    if len(span_links) > max_links:
                        dropped_links += len(span_links) - max_links
                        span_links = span_links[:max_links]
                        problems.note(f"links past {max_links} dropped (max_span_links)")
                if end < start:
                    problems.note("ends before it starts; stored with duration 0")
                trace_hex = trace_id.hex()
                span_hex = span_id.hex()
                name = span.name
                dropped_attributes = span.dropped_attributes_count
                try:
                    values = attribute_values(span.attributes)
                    attributes = "".join(encode_chunks(values, 0))
                    within = len(attributes) <= fits
                except TooDeep:
                    within = False
                if not within:
                    values, attributes, dropped_attributes = bounds.cut_attributes(
                        span.attributes, dropped_attributes
                    )
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
                        attributes,
                        dropped_attributes,
                        dropped_events,
                        dropped_links,
                    )
                )
                # Looping over an empty repeated field still costs an iterator; skip it.
                if span_events:
                    for event in span_events:
                        dropped = event.dropped_attributes_count
                        event_attributes = attributes_json(event.attributes, fits)
                        if event_attributes is None:
                            event_attributes, dropped = bounds.cut_attributes_json(
                                event.attributes, dropped, "event attribute"
                            )
                        add_event(
                            (
                                trace_hex,
                                span_hex,
                                name,
                                event.time_unix_nano,
                                event.name,
                                event_attributes,
                                dropped,
                                service,
                            )
                        )
                if span_links:
                    for link in span_links:
                        dropped = link.dropped_attributes_count
                        link_attributes = attributes_json(link.attributes, fits)
                        if link_attributes is None:
                            link_attributes, dropped = bounds.cut_attributes_json(
                                link.attributes, dropped, "link attribute"
                            )
                        add_link(
                            (
                                trace_hex,
                                span_hex,
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                link.trace_state or None,
                                link.flags,
                                link_attributes,
                                dropped,
                                service,
                            )
                        )
    limit, note = limits.attribute_value_size, problems.note
    tables = {"spans": spans.table(limit, note)}
    if len(events):
        tables["span_events"] = events.table(limit, note)
    if len(links):
        tables["span_links"] = links.table(limit, note)
    return DecodedBatch(
        Signal.TRACES, tables, len(spans), problems.rejected, problems.messages("span")
    )


# ---------------------------------------------------------------------------------------------
# Logs


def _check_log(record: Any) -> None:
    """Raise :class:`_Reject` with the first reason a log record cannot be stored, if any."""
    _hex_id(record.trace_id, 16, "trace_id", required=False)
    _hex_id(record.span_id, 8, "span_id", required=False)
    _ns(record.observed_time_unix_nano, "observed_time_unix_nano")
    _ns(record.time_unix_nano, "time_unix_nano")


def decode_logs(
    request: Any,
    received_ns: int,
    limits: IngestLimits = DEFAULT_LIMITS,
    notes: Iterable[str] = (),
) -> DecodedBatch:
    """Flatten an ExportLogsServiceRequest into the logs table.

    A record without a time takes its observed time; one without either takes the arrival
    time as observed time (ophiond is then the collector that observed it).
    """
    logs = _Rows("logs")
    add_log = logs.add
    problems = _Problems(notes)
    bounds = ValueBounds(limits, problems.note)
    fits, body_fits = bounds.fits, bounds.body_fits
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            logs.start_run(_origin(resource_logs, scope_logs, bounds))
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
                    text, body_type = bounds.body(body)
                elif len(text) > body_fits:
                    text = bounds.body_text(text)
                dropped = record.dropped_attributes_count
                attributes = attributes_json(record.attributes, fits)
                if attributes is None:
                    attributes, dropped = bounds.cut_attributes_json(record.attributes, dropped)
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
                        attributes,
                        dropped,
                    )
                )
    return DecodedBatch(
        Signal.LOGS,
        {"logs": logs.table(limits.attribute_value_size, problems.note)},
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


def _exemplars(point: Any, bounds: ValueBounds) -> str | None:
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
                "value": exemplar.as_int if kind == "as_int" else json_double(exemplar.as_double),
                "trace_id": trace_id,
                "span_id": span_id,
                "filtered_attributes": bounds.attributes(
                    exemplar.filtered_attributes, 0, "exemplar attribute"
                )[0],
            }
        )
    return to_json(out)


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


def decode_metrics(
    request: Any, limits: IngestLimits = DEFAULT_LIMITS, notes: Iterable[str] = ()
) -> DecodedBatch:
    """Flatten an ExportMetricsServiceRequest into metric_points, one row per data point."""
    points = _Rows("metric_points")
    add_point = points.add
    problems = _Problems(notes)
    bounds = ValueBounds(limits, problems.note)
    fits = bounds.fits
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            points.start_run(_origin(resource_metrics, scope_metrics, bounds))
            for metric in scope_metrics.metrics:
                data_kind = metric.WhichOneof("data")
                if data_kind is None:
                    problems.note(f"metric {shown(metric.name)} has no data; nothing stored for it")
                    continue
                metric_type, point_fields = _METRIC_KINDS[data_kind]
                data = getattr(metric, data_kind)
                temporality = (
                    _enum_name(_TEMPORALITY, data.aggregation_temporality)
                    if data_kind in ("sum", "histogram", "exponential_histogram")
                    else None
                )
                monotonic = data.is_monotonic if data_kind == "sum" else None
                metadata = (
                    bounds.attributes(metric.metadata, 0, "metadata attribute")[1]
                    if metric.metadata
                    else None
                )
                for point in data.data_points:
                    try:
                        start = _ns(point.start_time_unix_nano, "start_time_unix_nano")
                        time_ns = _ns(point.time_unix_nano, "time_unix_nano")
                    except _Reject as reason:
                        problems.reject(str(reason))
                        continue
                    values = dict(_POINT_DEFAULTS)
                    values.update(point_fields(point))
                    # Data points have no dropped count: what is dropped is only noted.
                    attributes = attributes_json(point.attributes, fits)
                    if attributes is None:
                        attributes = bounds.cut_attributes_json(point.attributes, 0)[0]
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
                            attributes,
                            *values.values(),
                            point.flags,
                            _exemplars(point, bounds) if data_kind != "summary" else None,
                        )
                    )
    return DecodedBatch(
        Signal.METRICS,
        {"metric_points": points.table(limits.attribute_value_size, problems.note)},
        len(points),
        problems.rejected,
        problems.messages("data point"),
    )


def decode(
    signal: Signal,
    request: Any,
    received_ns: int,
    limits: IngestLimits = DEFAULT_LIMITS,
    notes: Iterable[str] = (),
) -> DecodedBatch:
    """Flatten a parsed export request of any signal within ``limits``; ``notes`` are what
    parsing found to tell the client."""
    if signal is Signal.TRACES:
        return decode_traces(request, limits, notes)
    if signal is Signal.LOGS:
        return decode_logs(request, received_ns, limits, notes)
    return decode_metrics(request, limits, notes)
