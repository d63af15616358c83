"""The arithmetic behind the query commands, on shapes that are easy to get wrong."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from ophiond.store.metricseries import _buckets, _quantile, metric_series
from ophiond.store.queries import Queries, TraceSearch, critical_path


def _span(span_id: str, parent: str | None, start: int, end: int) -> dict[str, Any]:
    return {"span_id": span_id, "parent_span_id": parent, "start_ns": start, "end_ns": end}


def test_critical_path_leaves_out_a_call_made_in_parallel() -> None:
    spans = [
        _span("root", None, 0, 100),
        _span("call-a", "root", 1, 60),
        _span("serve-a", "call-a", 5, 55),
        _span("call-b", "root", 2, 90),
        _span("serve-b", "call-b", 10, 85),
    ]
    assert critical_path(spans) == ["root", "call-b", "serve-b"]


def test_critical_path_follows_sequential_calls_backwards() -> None:
    spans = [
        _span("root", None, 0, 100),
        _span("first", "root", 5, 40),
        _span("second", "root", 45, 95),
        _span("inner", "second", 50, 60),
    ]
    assert critical_path(spans) == ["root", "second", "inner", "first"]


def test_critical_path_counts_a_child_that_outlives_its_parent() -> None:
    spans = [_span("root", None, 0, 50), _span("async", "root", 10, 80)]
    assert critical_path(spans) == ["root", "async"]


def _exponential(scale: int, offset: int, counts: list[int], zero: int = 0) -> dict[str, Any]:
    return {
        "metric_type": "exponential_histogram",
        "scale": scale,
        "zero_count": zero,
        "positive_offset": offset,
        "positive_bucket_counts": counts,
        "negative_offset": 0,
        "negative_bucket_counts": [],
    }


def test_exponential_quantile_stays_inside_its_bucket() -> None:
    scale = 3
    base = 2 ** (2**-scale)
    index = math.ceil(math.log(100, base)) - 1  # the bucket holding 100
    buckets = _buckets(_exponential(scale, index, [10]))
    p50 = _quantile(buckets, 0.5, base)
    assert p50 is not None and base**index < p50 <= base ** (index + 1)


def test_exponential_quantile_across_a_gap_uses_the_buckets_own_edges() -> None:
    scale = 3
    base = 2 ** (2**-scale)
    low = math.ceil(math.log(33, base)) - 1
    high = math.ceil(math.log(100, base)) - 1
    counts = [0] * (high - low + 1)
    counts[0], counts[-1] = 49, 51
    p51 = _quantile(_buckets(_exponential(scale, low, counts)), 0.51, base)
    assert p51 is not None and 95 < p51 <= 110


def test_exponential_buckets_fold_into_a_coarser_scale() -> None:
    fine = _buckets(_exponential(2, 8, [3, 4, 5, 6]), scale=1)  # indexes 8..11 -> 4, 4, 5, 5
    base = 2 ** (2**-1)
    assert fine == {base**5: 7, base**6: 11}


def test_cumulative_counter_rate_with_a_reset() -> None:
    t0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
    base_ns = int(t0.timestamp()) * 10**9

    def point(second: int, value: float, start: int = 0) -> dict[str, Any]:
        return {
            "metric_type": "sum",
            "unit": "1",
            "temporality": "CUMULATIVE",
            "is_monotonic": True,
            "service_name": "svc",
            "attributes": "{}",
            "start_ns": base_ns - 10**12 + start,
            "time_ns": base_ns + second * 10**9,
            "value": value,
        }

    points = [point(0, 100), point(1, 110), point(2, 5, start=1)]  # restarted at 2s
    doc = metric_series("requests", points, t0, t0 + dt.timedelta(seconds=3), 10**9)
    values = [p["value"] for p in doc["series"][0]["points"]]
    assert values == [10.0, 5.0]  # the first point has no earlier one in the window


# Attribute values a substring pre-filter could get wrong: quotes, backslashes, control and
# non-ASCII characters, and values that are not strings (stored bare, or read back by DuckDB in
# its own rendering).
TRICKY_ATTRIBUTES: list[tuple[str, Any]] = [
    ("app.quote", 'say "hi"'),
    ("app.backslash", "C:\\temp\\new"),
    ("app.unicode", "Grüße ✓ 日本 🚀"),
    ("app.control", "line1\nline2\ttab\x01\u2028"),
    ("app.json_text", '{"a":1}'),
    ("app.int_as_string", "42"),
    ("app.true_as_string", "true"),
    ("app.empty", ""),
    ("app.int", 42),
    ("app.negative", -7),
    ("app.big", 2**63 - 1),
    ("app.float", 1e16),
    ("app.fraction", 0.1),
    ("app.bool", True),
    ("app.array", [1, "two", 3.5]),
    ("app.kvlist", {"inner": "x", "n": 1}),
    ("app.bytes", b"\x00\xff"),
    ("clé ünï", "v"),
    ("app.dup", "value"),  # also a resource attribute, with another value
]


def _any_value(value: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any_value(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        for k, v in value.items():
            kv = out.kvlist_value.values.add()
            kv.key = k
            kv.value.CopyFrom(_any_value(v))
        return out
    return AnyValue(string_value=value)


def test_attribute_filter_finds_exactly_what_the_json_test_finds(tmp_path: Path) -> None:
    """The substring pre-filters in front of the JSON test must never drop a match."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from ophiond.otlp.decode import decode_traces
    from ophiond.store.partitions import PartitionSet, connect

    now = dt.datetime.now(dt.UTC)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in [("service.name", "shop"), ("app.dup", "from-resource"), ("host.ü", 'h"1')]:
        kv = resource_spans.resource.attributes.add()
        kv.key = key
        kv.value.CopyFrom(_any_value(value))
    scope = resource_spans.scope_spans.add()
    for n, (key, value) in enumerate(TRICKY_ATTRIBUTES, start=1):
        span = scope.spans.add()
        span.trace_id = n.to_bytes(16, "big")
        span.span_id = n.to_bytes(8, "big")
        span.name = "op"
        span.start_time_unix_nano = int(now.timestamp() * 1e9) - n
        span.end_time_unix_nano = span.start_time_unix_nano + 1
        kv = span.attributes.add()
        kv.key = key
        kv.value.CopyFrom(_any_value(value))

    partitions = PartitionSet(connect(256 << 20, tmp_path), tmp_path)
    partitions.open(now)
    batch = decode_traces(request).tables["spans"]
    partitions.con.register("batch", batch)
    partitions.con.execute(
        f"INSERT INTO {partitions.current.alias}.main.spans BY NAME SELECT * FROM batch"
    )
    queries = Queries(partitions, timeout_s=30)
    since = now - dt.timedelta(hours=1)
    keys = [key for key, _ in TRICKY_ATTRIBUTES] + ["service.name", "host.ü"]
    checked = 0
    for key in keys:
        path = '$."' + key + '"'
        values = partitions.con.execute(
            "SELECT DISTINCT v FROM (SELECT coalesce(json_extract_string(attributes, ?), "
            "json_extract_string(resource_attributes, ?)) AS v FROM raw_spans) WHERE v IS NOT NULL",
            [path, path],
        ).fetchall()
        for (value,) in values:
            expected = {
                row[0]
                for row in partitions.con.execute(
                    "SELECT trace_id FROM raw_spans WHERE coalesce(json_extract_string("
                    "attributes, ?), json_extract_string(resource_attributes, ?)) = ?",
                    [path, path, value],
                ).fetchall()
            }
            found = queries.traces(TraceSearch(since=since, attributes=[(key, value)], limit=100))
            assert {t["trace_id"] for t in found} == expected, (key, value)
            checked += 1
    assert checked >= len(keys)
