"""The decoder's fast paths give what the plain reading of OTLP gives.

decode.py writes attribute JSON with a reused C encoder, reads string and int values before
asking for the kind of a value, checks valid records with one combined test, and repeats the
origin columns per (resource, scope) run. These tests hold each shortcut to the plain answer:
``json.dumps`` of the attribute values, the first problem of a record, one origin per row.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ophiond.model import arrow_schemas
from ophiond.otlp.decode import decode_logs, decode_metrics, decode_traces

NASTY = 'naïve ✓ "quoted" back\\slash\x00\x01\x1f\n\t\u2028 🐍 %s'


def any_value(python: Any) -> AnyValue:
    """The AnyValue an SDK sends for a Python value (bytes stay bytes, tuples are arrays)."""
    value = AnyValue()
    if python is None:
        pass
    elif isinstance(python, bool):
        value.bool_value = python
    elif isinstance(python, int):
        value.int_value = python
    elif isinstance(python, float):
        value.double_value = python
    elif isinstance(python, str):
        value.string_value = python
    elif isinstance(python, bytes):
        value.bytes_value = python
    elif isinstance(python, tuple):
        value.array_value.SetInParent()
        value.array_value.values.extend(any_value(item) for item in python)
    else:
        value.kvlist_value.SetInParent()
        value.kvlist_value.values.extend(key_values(python))
    return value


def key_values(pairs: dict[str, Any] | list[tuple[str, Any]]) -> list[KeyValue]:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return [KeyValue(key=key, value=any_value(value)) for key, value in items]


# Every kind of value, with the JSON value it is stored as.
EVERY_KIND: list[tuple[str, Any, Any]] = [
    ("text", NASTY, NASTY),
    ("empty text", "", ""),
    ("int", 200, 200),
    ("zero", 0, 0),
    ("negative", -(2**63), -(2**63)),
    ("true", True, True),
    ("false", False, False),
    ("double", 0.1 + 0.2, 0.1 + 0.2),
    ("minus zero", -0.0, -0.0),
    ("nan", math.nan, "nan"),
    ("infinity", math.inf, "inf"),
    ("minus infinity", -math.inf, "-inf"),
    ("bytes", b"\x00\xff ok", base64.b64encode(b"\x00\xff ok").decode()),
    ("no value", None, None),
    ("array", (1, "two", 3.5, (False,), ()), [1, "two", 3.5, [False], []]),
    ("kvlist", {"inner": {"deep": NASTY}, "n": math.nan}, {"inner": {"deep": NASTY}, "n": "nan"}),
    ("empty kvlist", {}, {}),
    (NASTY, "key with everything", "key with everything"),
]


def json_text(value: Any) -> str:
    """The text stored JSON must be: json.dumps, compact, non-ASCII kept as it is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def expected_json(pairs: list[tuple[str, Any]]) -> str:
    return json_text(dict(pairs))


def trace_request(spans: int = 1, attributes: list[KeyValue] | None = None) -> Any:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"op-{i}"
        span.start_time_unix_nano = 1_000
        span.end_time_unix_nano = 2_000
        span.attributes.extend(attributes or [])
    return request


def test_attributes_of_every_kind_are_stored_as_json_dumps_writes_them() -> None:
    stored_pairs = [(key, stored) for key, _, stored in EVERY_KIND]
    attributes = key_values([(key, sent) for key, sent, _ in EVERY_KIND])
    request = trace_request(attributes=attributes)
    resource = request.resource_spans[0]
    resource.resource.attributes.extend(attributes)
    resource.scope_spans[0].scope.attributes.extend(attributes)
    span = resource.scope_spans[0].spans[0]
    span.events.add(time_unix_nano=1_500, name="e").attributes.extend(attributes)
    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    link.attributes.extend(attributes)

    tables = decode_traces(request).tables
    text = expected_json(stored_pairs)
    row = tables["spans"].to_pylist()[0]
    assert row["attributes"] == text
    assert row["resource_attributes"] == text
    assert row["scope_attributes"] == text
    assert tables["span_events"]["attributes"].to_pylist() == [text]
    assert tables["span_links"]["attributes"].to_pylist() == [text]
    assert json.loads(text)["text"] == NASTY


def test_a_repeated_key_keeps_its_first_place_and_its_last_value() -> None:
    attributes = key_values([("a", 1), ("b", "x"), ("a", "last"), ("c", 0.5), ("b", 0)])
    row = decode_traces(trace_request(attributes=attributes)).tables["spans"].to_pylist()[0]
    assert row["attributes"] == '{"a":"last","b":0,"c":0.5}'


def test_log_attributes_and_bodies_of_every_kind() -> None:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for key, sent, _ in EVERY_KIND:
        record = scope.log_records.add(time_unix_nano=1_000)
        if sent is not None:
            record.body.CopyFrom(any_value(sent))
        record.attributes.extend(key_values([(key, sent), ("k", 1)]))

    rows = decode_logs(request, received_ns=5_000).tables["logs"].to_pylist()
    assert len(rows) == len(EVERY_KIND)
    for row, (key, sent, stored) in zip(rows, EVERY_KIND, strict=True):
        assert row["attributes"] == expected_json([(key, stored), ("k", 1)]), key
        if sent is None:
            assert (row["body"], row["body_type"]) == (None, None)
        elif isinstance(sent, str):
            assert (row["body"], row["body_type"]) == (sent, "string")
        else:
            assert row["body"] == json_text(stored), key


@pytest.mark.parametrize(
    ("attributes", "columns"),
    [
        (
            {"http.request.method": "GET", "http.method": "POST", "http.route": "/a/{id}"},
            ("GET", "/a/{id}", None, None),
        ),
        ({"http.method": "PUT", "http.status_code": "404"}, ("PUT", None, 404, None)),
        (
            {"http.response.status_code": 503, "http.status_code": 200, "db.system": "redis"},
            (None, None, 503, "redis"),
        ),
        # The current name wins even with a value of the wrong type: the column stays empty.
        ({"http.request.method": 7, "http.method": "GET"}, (None, None, None, None)),
        ({"http.response.status_code": True, "db.system.name": ("x",)}, (None, None, None, None)),
        ({"http.response.status_code": 2**40, "http.route": ""}, (None, "", None, None)),
        ({"db.system.name": "postgresql", "db.system": "mysql"}, (None, None, None, "postgresql")),
        ({"url.path": "/x"}, (None, None, None, None)),
    ],
)
def test_hot_columns(attributes: dict[str, Any], columns: tuple[Any, ...]) -> None:
    row = decode_traces(trace_request(attributes=key_values(attributes))).tables["spans"]
    found = row.select(["http_method", "http_route", "http_status_code", "db_system"])
    assert tuple(found.to_pylist()[0].values()) == columns


def test_each_span_is_rejected_for_its_first_problem() -> None:
    request = trace_request(spans=7)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x01" * 4
    spans[0].end_time_unix_nano = 2**64 - 1  # second problem: not the one reported
    spans[1].parent_span_id = b"\x01" * 9
    spans[2].links.add(trace_id=b"\x01" * 16, span_id=b"")
    spans[3].events.add(time_unix_nano=2**63)
    spans[4].links.add(trace_id=b"\x01" * 16, span_id=b"\x01" * 8)  # a good link
    spans[4].events.add(time_unix_nano=1_500, name="ok")  # and a good event
    spans[5].start_time_unix_nano = 3_000  # ends before it starts: stored
    batch = decode_traces(request)
    assert (batch.accepted, batch.rejected) == (3, 4)
    assert batch.problems == [
        "1 span: trace_id is 4 bytes, not 16",
        "1 span: parent_span_id is 9 bytes, not 8",
        "1 span: link span_id is empty",
        "1 span: event time_unix_nano 9223372036854775808 is past the largest storable time"
        " (year 2262)",
        "1 span: ends before it starts; stored with duration 0",
    ]
    assert batch.tables["spans"]["name"].to_pylist() == ["op-4", "op-5", "op-6"]
    assert batch.tables["span_events"]["span_name"].to_pylist() == ["op-4"]
    assert batch.tables["span_links"]["span_id"].to_pylist() == [(5).to_bytes(8, "big").hex()]


def test_origin_columns_follow_each_resource_and_scope() -> None:
    request = ExportTraceServiceRequest()
    expected = []
    for service, spans_per_scope in (("a", [2, 0, 1]), ("b", []), ("c", [3])):
        resource_spans = request.resource_spans.add(schema_url=f"https://{service}")
        resource_spans.resource.attributes.extend(key_values({"service.name": service}))
        for n, count in enumerate(spans_per_scope):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = f"{service}-{n}"
            for _ in range(count):
                span = scope_spans.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
                span.start_time_unix_nano = span.end_time_unix_nano = 1
                expected.append((service, f"{service}-{n}", f"https://{service}"))
        bad = resource_spans.scope_spans.add().spans.add()  # a scope whose only span is rejected
        bad.trace_id = b"\x01"

    batch = decode_traces(request)
    table = batch.tables["spans"]
    assert table.schema == arrow_schemas()["spans"]
    found = table.select(["service_name", "scope_name", "resource_schema_url"]).to_pylist()
    assert [tuple(row.values()) for row in found] == expected
    assert table["resource_attributes"].to_pylist()[0] == '{"service.name":"a"}'


def test_empty_requests_give_empty_tables_with_the_store_schema() -> None:
    schemas = arrow_schemas()
    traces = decode_traces(ExportTraceServiceRequest()).tables
    assert list(traces) == ["spans"]
    assert traces["spans"].schema == schemas["spans"] and traces["spans"].num_rows == 0
    logs = decode_logs(ExportLogsServiceRequest(), received_ns=1).tables["logs"]
    assert logs.schema == schemas["logs"] and logs.num_rows == 0
    points = decode_metrics(ExportMetricsServiceRequest()).tables["metric_points"]
    assert points.schema == schemas["metric_points"] and points.num_rows == 0
