"""The arithmetic behind the query commands, on shapes that are easy to get wrong."""

from __future__ import annotations

import math
from typing import Any

from ophiond.store.metricseries import _buckets, _quantile, metric_series
from ophiond.store.queries import critical_path


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
    import datetime as dt

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
