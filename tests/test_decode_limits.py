"""The decoder stores a value past a limit cut and marked, keeps the rest of the request, and
tells the client; values within the limits are stored exactly as before.

The limits are small here (:data:`SMALL`) so that the values stay small too; the end-to-end
tests (test_ingest_limits_e2e.py) send the 16 and 19 MiB values through a real daemon.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from test_decode_fast import EVERY_KIND, any_value, json_text, key_values, trace_request

from ophiond.errors import InvalidPayload
from ophiond.model import IngestLimits, Signal
from ophiond.otlp.decode import decode_logs, decode_metrics, decode_traces
from ophiond.otlp.limits import MAX_NESTING, NESTED_MARKER, cut_text
from ophiond.otlp.workers import DecodePool, decode_body

SMALL = IngestLimits(
    attribute_value_size=1024,
    attributes_size=4096,
    log_body_size=2048,
    events_per_span=3,
    links_per_span=2,
)


def span_attributes(batch: Any) -> dict[str, Any]:
    row = batch.tables["spans"].to_pylist()[0]
    attributes: dict[str, Any] = json.loads(row["attributes"])
    return attributes


def assert_cut(stored: str, sent: str, limit: int) -> None:
    """``stored`` is ``sent`` cut to ``limit`` UTF-8 bytes at a character boundary, marked with
    the exact number of bytes cut."""
    assert len(stored.encode()) <= limit
    kept, marker = stored.rsplit("…[truncated ", 1)
    assert sent.startswith(kept) and len(kept.encode()) > limit - 40
    assert marker == f"{len(sent.encode()) - len(kept.encode())} bytes]"


# ---------------------------------------------------------------------------------------------
# Attribute values


def test_a_long_string_is_cut_at_a_character_boundary_and_marked() -> None:
    sent = "é" * 3000 + "z"  # two bytes a character: an odd limit falls inside one
    batch = decode_traces(
        trace_request(attributes=key_values({"blob": sent, "http.route": "/a"})), SMALL
    )
    attributes = span_attributes(batch)
    assert_cut(attributes["blob"], sent, 1024)
    assert attributes["blob"].startswith("é" * 400)
    assert attributes["http.route"] == "/a"
    assert batch.tables["spans"]["http_route"].to_pylist() == ["/a"]
    assert (batch.accepted, batch.rejected) == (1, 0)
    assert batch.problems == [
        "1 span: attribute 'blob' longer than 1024 bytes; cut (max_attribute_value_size)"
    ]


def test_cut_text_never_passes_the_limit_nor_splits_a_character() -> None:
    for limit in range(40, 80):
        for text in ("a" * 100, "€" * 100, "🐍" * 100, "a€🐍" * 40):
            cut = cut_text(text, limit)
            assert cut is not None and len(cut.encode()) <= limit, (limit, text[:3])
            kept = cut.rsplit("…[truncated ", 1)[0]
            assert text.startswith(kept)
    assert cut_text("€" * 10, 30) is None  # exactly 30 bytes: fits


def test_bytes_strings_in_arrays_and_kvlists_are_cut_too() -> None:
    raw = bytes(range(256)) * 8
    long = "x" * 2000
    attributes = {
        "raw": raw,
        "list": ("short", long, 7, long),  # two values cut: one note
        "map": {"inner": {"text": long}, "n": 1.5},
    }
    roomy = dataclasses.replace(SMALL, attributes_size=1 << 16)  # all of it fits
    batch = decode_traces(trace_request(attributes=key_values(attributes)), roomy)
    stored = span_attributes(batch)
    kept, marker = stored["raw"].split("…[truncated ")
    assert raw.startswith(base64.b64decode(kept))
    assert marker == f"{len(raw) - len(base64.b64decode(kept))} bytes]"
    assert stored["list"][0] == "short" and stored["list"][2] == 7
    assert_cut(stored["list"][1], long, 1024)
    assert stored["list"][3] == stored["list"][1]
    assert_cut(stored["map"]["inner"]["text"], long, 1024)
    assert stored["map"]["n"] == 1.5
    assert batch.problems == [
        "1 span: attribute 'raw' longer than 1024 bytes; cut (max_attribute_value_size)",
        "1 span: attribute 'list' longer than 1024 bytes; cut (max_attribute_value_size)",
        "1 span: attribute 'map' longer than 1024 bytes; cut (max_attribute_value_size)",
    ]


def test_attributes_past_the_record_limit_are_dropped_and_counted() -> None:
    pairs = [(f"k{i}", str(i) * 900) for i in range(10)] + [("small", 1)]
    request = trace_request(attributes=key_values(pairs))
    request.resource_spans[0].scope_spans[0].spans[0].dropped_attributes_count = 2
    batch = decode_traces(request, SMALL)
    stored = span_attributes(batch)
    # Each that fits is kept, in order: four of 900 bytes, and the small one after them.
    assert list(stored) == ["k0", "k1", "k2", "k3", "small"]
    assert len(batch.tables["spans"]["attributes"][0].as_py().encode()) <= 4096
    assert batch.tables["spans"]["dropped_attributes_count"].to_pylist() == [2 + 6]
    assert batch.problems == ["1 span: attributes past 4096 bytes dropped (max_attributes_size)"]


def test_resource_event_link_and_log_attributes_have_the_same_limits() -> None:
    long = "r" * 5000
    request = trace_request(attributes=key_values({"ok": 1}))
    resource_spans = request.resource_spans[0]
    resource_spans.resource.attributes.extend(key_values({"service.name": "svc", "big": long}))
    span = resource_spans.scope_spans[0].spans[0]
    span.events.add(time_unix_nano=1_500, name="e").attributes.extend(key_values({"big": long}))
    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    link.attributes.extend(key_values({"big": long}))
    batch = decode_traces(request, SMALL)
    row = batch.tables["spans"].to_pylist()[0]
    assert row["service_name"] == "svc"
    assert_cut(json.loads(row["resource_attributes"])["big"], long, 1024)
    for table in ("span_events", "span_links"):
        assert_cut(json.loads(batch.tables[table]["attributes"][0].as_py())["big"], long, 1024)
    assert batch.problems == [
        f"1 span: {what} attribute 'big' longer than 1024 bytes; cut (max_attribute_value_size)"
        for what in ("resource", "event", "link")
    ]

    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=1, attributes=key_values({"big": long})
    )
    log_batch = decode_logs(logs, 5, SMALL)
    assert_cut(json.loads(log_batch.tables["logs"]["attributes"][0].as_py())["big"], long, 1024)


def test_metric_point_exemplar_and_metadata_attributes_are_cut() -> None:
    long = "m" * 5000
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.metadata.extend(key_values({"big": long}))
    point = metric.gauge.data_points.add(time_unix_nano=1, as_int=3)
    point.attributes.extend(key_values({"big": long}))
    exemplar = point.exemplars.add(time_unix_nano=1, as_int=3)
    exemplar.filtered_attributes.extend(key_values({"big": long}))
    table = decode_metrics(request, SMALL).tables["metric_points"]
    row = table.select(["attributes", "metadata", "exemplars"]).to_pylist()[0]
    assert_cut(json.loads(row["attributes"])["big"], long, 1024)
    assert_cut(json.loads(row["metadata"])["big"], long, 1024)
    assert_cut(json.loads(row["exemplars"])[0]["filtered_attributes"]["big"], long, 1024)


def test_within_the_limits_the_slow_path_stores_what_the_fast_one_does() -> None:
    # Longer than a quarter of the limit (so it is read again) but within it: unchanged.
    pairs = [(key, sent) for key, sent, _ in EVERY_KIND] + [("text", "€" * 300)]
    stored = [(key, value) for key, _, value in EVERY_KIND] + [("text", "€" * 300)]
    batch = decode_traces(trace_request(attributes=key_values(pairs)), SMALL)
    assert batch.tables["spans"]["attributes"].to_pylist() == [json_text(dict(stored))]
    assert batch.problems == []


# ---------------------------------------------------------------------------------------------
# Other strings: names, messages, trace states, units, schema URLs...


def rows_of(table: Any) -> list[dict[str, Any]]:
    """A table's rows, but for its times (1 ns past 1970 has no ``datetime``)."""
    names = [f.name for f in table.schema if f.type != "timestamp[ns]"]
    rows: list[dict[str, Any]] = table.select(names).to_pylist()
    return rows


def cut_note(what: str, records: int = 1, noun: str = "span") -> str:
    counted = f"{records} {noun}s" if records > 1 else f"1 {noun}"
    return f"{counted}: {what} longer than 1024 bytes; cut (max_attribute_value_size)"


def test_a_long_span_name_status_message_and_scope_name_are_cut_and_the_spans_kept() -> None:
    name = "é" * 3000 + "z"  # two bytes a character: the limit falls inside one
    message = "boom " * 1000
    scope_name = "s" * 5000
    request = trace_request(spans=3, attributes=key_values({"http.route": "/a", "n": 1}))
    scope_spans = request.resource_spans[0].scope_spans[0]
    scope_spans.scope.name = scope_name  # shared by the three spans
    scope_spans.scope.version = "1.2.3"
    long_span, exact_span = scope_spans.spans[1], scope_spans.spans[2]
    long_span.name = name
    long_span.status.code = 2
    long_span.status.message = message
    long_span.kind = 2
    long_span.events.add(time_unix_nano=1_500, name="retry")
    exact_span.name = "a" * 1024  # at the limit: kept whole
    batch = decode_traces(request, SMALL)

    rows = rows_of(batch.tables["spans"])
    assert [row["span_id"] for row in rows] == [f"{i:016x}" for i in (1, 2, 3)]
    assert_cut(rows[1]["name"], name, 1024)
    assert rows[1]["name"].startswith("é" * 400)
    assert_cut(rows[1]["status_message"], message, 1024)
    assert (rows[0]["name"], rows[2]["name"]) == ("op-0", "a" * 1024)
    assert (rows[1]["status_code"], rows[1]["kind"]) == ("ERROR", "SERVER")
    for row in rows:
        assert_cut(row["scope_name"], scope_name, 1024)
        assert row["scope_version"] == "1.2.3"
        assert json.loads(row["attributes"]) == {"http.route": "/a", "n": 1}
        assert row["http_route"] == "/a"
        assert row["duration_ns"] == 1_000
    # The span's name, repeated by its event, is cut the same (and noted once, for the span).
    event = rows_of(batch.tables["span_events"])[0]
    assert (event["span_name"], event["name"]) == (rows[1]["name"], "retry")
    assert (batch.accepted, batch.rejected) == (3, 0)
    assert batch.problems == [
        cut_note("name"),
        cut_note("status message"),
        cut_note("scope name", 3),
    ]


def test_long_event_names_and_trace_states_are_cut() -> None:
    request = trace_request(spans=2)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.trace_state = "vendor=" + "v" * 2000
    span.events.add(time_unix_nano=1_500, name="e" * 2000).attributes.extend(
        key_values({"ok": "yes"})
    )
    span.events.add(time_unix_nano=1_600, name="short")
    span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="t=" + "t" * 2000)
    batch = decode_traces(request, SMALL)

    spans = rows_of(batch.tables["spans"])
    assert_cut(spans[0]["trace_state"], "vendor=" + "v" * 2000, 1024)
    assert spans[1]["trace_state"] is None
    events = rows_of(batch.tables["span_events"])
    assert_cut(events[0]["name"], "e" * 2000, 1024)
    assert json.loads(events[0]["attributes"]) == {"ok": "yes"}
    assert events[1]["name"] == "short"
    assert batch.tables["span_events"]["time"].cast("int64").to_pylist() == [1_500, 1_600]
    link = batch.tables["span_links"].to_pylist()[0]
    assert_cut(link["trace_state"], "t=" + "t" * 2000, 1024)
    assert link["linked_span_id"] == "02" * 8
    assert batch.accepted == 2
    assert batch.problems == [
        cut_note("trace_state"),
        cut_note("event name"),
        cut_note("link trace_state"),
    ]


def test_long_log_severity_text_event_name_and_schema_url_are_cut() -> None:
    severity = "WARN" * 1000
    url = "https://example.com/" + "p" * 3000
    request = logs_with_bodies(any_value("first"), any_value("second"))
    resource_logs = request.resource_logs[0]
    resource_logs.schema_url = url
    first, second = resource_logs.scope_logs[0].log_records
    first.severity_text = severity
    first.severity_number = 13
    first.event_name = "click." * 500
    first.attributes.extend(key_values({"user": "u1"}))
    second.severity_text = "INFO"
    batch = decode_logs(request, 5, SMALL)

    rows = rows_of(batch.tables["logs"])
    assert_cut(rows[0]["severity_text"], severity, 1024)
    assert_cut(rows[0]["event_name"], "click." * 500, 1024)
    assert (rows[0]["severity_number"], rows[0]["body"]) == (13, "first")
    assert json.loads(rows[0]["attributes"]) == {"user": "u1"}
    assert (rows[1]["severity_text"], rows[1]["body"], rows[1]["event_name"]) == (
        "INFO",
        "second",
        None,
    )
    for row in rows:
        assert_cut(row["resource_schema_url"], url, 1024)
    assert batch.problems == [
        cut_note("severity text", noun="log record"),
        cut_note("event name", noun="log record"),
        cut_note("resource schema_url", 2, noun="log record"),
    ]


def test_long_metric_name_description_and_unit_are_cut_for_each_point() -> None:
    name = "http.server." + "n" * 2000
    description = "How long " * 300
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    metric = scope.metrics.add(name=name, description=description, unit="ms" * 600)
    metric.gauge.data_points.add(time_unix_nano=1, as_int=3)
    metric.gauge.data_points.add(time_unix_nano=2, as_double=4.5)
    scope.metrics.add(name="m" * 3000)  # no data: noted with its name shortened
    scope.metrics.add(name="plain", unit="s").sum.data_points.add(time_unix_nano=3, as_int=7)
    batch = decode_metrics(request, SMALL)

    table = batch.tables["metric_points"]
    rows = table.select(["metric_name", "description", "unit", "value"]).to_pylist()
    for row in rows[:2]:
        assert_cut(row["metric_name"], name, 1024)
        assert_cut(row["description"], description, 1024)
        assert_cut(row["unit"], "ms" * 600, 1024)
    assert [row["value"] for row in rows] == [3, 4.5, 7]
    assert table["timestamp"].cast("int64").to_pylist() == [1, 2, 3]
    assert (rows[2]["metric_name"], rows[2]["description"], rows[2]["unit"]) == ("plain", None, "s")
    assert batch.accepted == 3
    assert batch.problems == [
        f"1 data point: metric {'m' * 60 + '…'!r} has no data; nothing stored for it",
        cut_note("metric name", 2, noun="data point"),
        cut_note("metric description", 2, noun="data point"),
        cut_note("metric unit", 2, noun="data point"),
    ]


# ---------------------------------------------------------------------------------------------
# Events and links


def test_events_and_links_past_the_limit_are_dropped_and_counted() -> None:
    request = trace_request(spans=2)
    spans = request.resource_spans[0].scope_spans[0].spans
    many = spans[0]
    many.dropped_events_count = 10  # already dropped by the SDK: added to
    for i in range(5):
        many.events.add(time_unix_nano=1_000 + i, name=f"event-{i}")
        many.links.add(trace_id=b"\x01" * 16, span_id=bytes([i + 1]) * 8)
    spans[1].events.add(time_unix_nano=1_000, name="alone")
    batch = decode_traces(request, SMALL)
    rows = batch.tables["spans"].select(["dropped_events_count", "dropped_links_count"])
    assert [tuple(r.values()) for r in rows.to_pylist()] == [
        (10 + 2, 3),
        (0, 0),
    ]
    events = batch.tables["span_events"]["name"].to_pylist()
    assert events == ["event-0", "event-1", "event-2", "alone"]
    assert batch.tables["span_links"]["linked_span_id"].to_pylist() == ["01" * 8, "02" * 8]
    assert (batch.accepted, batch.rejected) == (2, 0)
    assert batch.problems == [
        "1 span: events past 3 dropped (max_span_events)",
        "1 span: links past 2 dropped (max_span_links)",
    ]


# ---------------------------------------------------------------------------------------------
# Log bodies


def logs_with_bodies(*bodies: AnyValue) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for body in bodies:
        scope.log_records.add(time_unix_nano=1).body.CopyFrom(body)
    return request


def test_a_long_string_body_is_cut_and_marked() -> None:
    sent = "line of text\n" * 500
    batch = decode_logs(logs_with_bodies(any_value(sent), any_value("short")), 5, SMALL)
    rows = batch.tables["logs"].select(["body", "body_type"]).to_pylist()
    assert_cut(rows[0]["body"], sent, 2048)
    assert rows[0]["body_type"] == "string"
    assert rows[1]["body"] == "short"
    assert batch.problems == [
        "1 log record: log body longer than 2048 bytes; cut (max_log_body_size)"
    ]


def test_a_long_structured_body_is_kept_as_its_json_text_cut() -> None:
    sent = {"message": "m" * 3000, "n": 1}
    batch = decode_logs(logs_with_bodies(any_value(sent)), 5, SMALL)
    row = batch.tables["logs"].select(["body", "body_type"]).to_pylist()[0]
    assert row["body_type"] == "string"  # no longer parses as the kvlist it was
    assert_cut(row["body"], json_text(sent), 2048)
    assert batch.problems == [
        "1 log record: log body longer than 2048 bytes; cut (max_log_body_size)"
    ]


# ---------------------------------------------------------------------------------------------
# Nesting


def nested(levels: int, leaf: Any = "leaf") -> Any:
    """A value of ``levels`` arrays and kvlists inside one another (Python form)."""
    value = leaf
    for i in range(levels):
        value = (value,) if i % 2 else {f"k{i}": value}
    return value


def test_a_value_nested_too_deep_is_cut_with_a_marker_and_the_rest_kept() -> None:
    request = trace_request(
        spans=2,
        attributes=key_values({"deep": nested(32), "fine": nested(MAX_NESTING), "n": 1}),
    )
    batch = decode_traces(request)
    assert batch.accepted == 2
    stored = span_attributes(batch)
    assert stored["n"] == 1
    assert json_text(stored["fine"]) == json_text(nested(MAX_NESTING))  # at the limit: whole
    deep = stored["deep"]
    for _ in range(MAX_NESTING):
        (deep,) = deep.values() if isinstance(deep, dict) else deep
    assert deep == NESTED_MARKER
    assert batch.problems == ["2 spans: attribute 'deep' nested deeper than 16 levels; cut"]


def test_a_body_nested_too_deep_is_cut_with_a_marker() -> None:
    batch = decode_logs(logs_with_bodies(any_value(nested(20))), 5)
    row = batch.tables["logs"].select(["body", "body_type"]).to_pylist()[0]
    assert row["body_type"] == "array"
    assert NESTED_MARKER in row["body"] and "leaf" not in row["body"]
    assert batch.problems == ["1 log record: log body nested deeper than 16 levels; cut"]


def otlp_json(request: Any) -> bytes:
    """A request as OTLP/JSON writes it: hex ids."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(request)
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                span["traceId"] = base64.b64decode(span["traceId"]).hex()
                span["spanId"] = base64.b64decode(span["spanId"]).hex()
    return json.dumps(document).encode()


@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf", "json"])
def test_a_request_the_parser_finds_too_deep_keeps_everything_else(as_json: bool) -> None:
    # 32 kvlists inside one another pass protobuf's parser's depth limit of 100 messages.
    request = trace_request(spans=3, attributes=key_values({"ok": "yes"}))
    value = request.resource_spans[0].scope_spans[0].spans[1].attributes.add(key="deep").value
    for i in range(64):  # built in place: CopyFrom would parse it, and refuse it
        value = value.kvlist_value.values.add(key=f"k{i}").value
    value.string_value = "leaf"
    body = otlp_json(request) if as_json else request.SerializeToString()
    batch = decode_body(Signal.TRACES, body, as_json, 0)
    assert (batch.accepted, batch.rejected) == (3, 0)
    rows = batch.tables["spans"]["attributes"].to_pylist()
    assert [json.loads(r)["ok"] for r in rows] == ["yes"] * 3
    assert NESTED_MARKER in rows[1] and "leaf" not in rows[1]
    assert batch.problems == ["1 span: attribute 'deep' nested deeper than 16 levels; cut"]


@pytest.mark.parametrize("depth", [2_000, 200_000])
def test_json_nested_past_what_python_can_read_is_invalid(depth: int) -> None:
    body = b'{"resourceSpans": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        decode_body(Signal.TRACES, body, True, 0)


# ---------------------------------------------------------------------------------------------
# Enum names in OTLP/JSON


def test_an_unknown_enum_name_is_stored_as_unspecified_and_noted() -> None:
    span = {
        "traceId": "01" * 16,
        "spanId": "02" * 8,
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
    }
    spans = [
        {**span, "kind": "SPAN_KIND_BOGUS", "status": {"code": "STATUS_CODE_NOPE"}},
        {**span, "kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_ERROR"}},
        {**span, "kind": 3, "status": {"code": "1"}},  # numbers, also as strings: fine
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    batch = decode_body(Signal.TRACES, body, True, 0)
    rows = batch.tables["spans"].select(["kind", "status_code"]).to_pylist()
    assert [tuple(r.values()) for r in rows] == [
        ("UNSPECIFIED", "UNSET"),
        ("SERVER", "ERROR"),
        ("CLIENT", "OK"),
    ]
    assert (batch.accepted, batch.rejected) == (3, 0)
    assert batch.problems == [
        "1 span: kind 'SPAN_KIND_BOGUS' is not a name in SpanKind; stored as UNSPECIFIED",
        "1 span: code 'STATUS_CODE_NOPE' is not a name in StatusCode; stored as UNSET",
    ]


def test_unknown_severity_and_temporality_names_are_noted_per_record() -> None:
    logs = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"timeUnixNano": "1", "severityNumber": "LOUD"}]}]}
        ]
    }
    batch = decode_body(Signal.LOGS, json.dumps(logs).encode(), True, 5)
    assert batch.tables["logs"]["severity_number"].to_pylist() == [0]
    assert batch.problems == [
        "1 log record: severityNumber 'LOUD' is not a name in SeverityNumber; stored as 0"
    ]
    points = [{"timeUnixNano": "1", "asInt": "1"}, {"timeUnixNano": "2", "asInt": "2"}]
    total = {"dataPoints": points, "aggregationTemporality": "AGGREGATION_TEMPORALITY_WEEKLY"}
    metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": total}]}]}]}
    batch = decode_body(Signal.METRICS, json.dumps(metrics).encode(), True, 5)
    assert batch.tables["metric_points"]["temporality"].to_pylist() == ["UNSPECIFIED"] * 2
    assert batch.problems == [
        "2 data points: aggregationTemporality 'AGGREGATION_TEMPORALITY_WEEKLY' is not a name"
        " in AggregationTemporality; stored as UNSPECIFIED"
    ]


# ---------------------------------------------------------------------------------------------
# The settings reach the decode workers


def test_decode_workers_use_the_configured_limits() -> None:
    pool = DecodePool(1, IngestLimits(attribute_value_size=1024))
    pool.start()
    try:
        body = trace_request(attributes=key_values({"blob": "x" * 5000})).SerializeToString()
        batch = pool.decode(Signal.TRACES, body, False, 0)
        stored = json.loads(batch.tables["spans"]["attributes"][0].as_py())["blob"]
        assert_cut(stored, "x" * 5000, 1024)
        assert batch.problems == [
            "1 span: attribute 'blob' longer than 1024 bytes; cut (max_attribute_value_size)"
        ]
    finally:
        pool.stop()
