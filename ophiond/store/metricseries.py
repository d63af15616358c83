"""Metric points -> values over time, per series: what ``ophion metrics NAME`` draws.

- gauge: the mean of the points in each step;
- monotonic sum: a rate per second (cumulative counters are differenced, with resets);
- other sums: the last value in each step;
- histogram and exponential histogram: p50/p95/p99 of the observations made in each step,
  interpolated within buckets, plus the rate of observations;
- summary: the p50/p95/p99 the client computed (the nearest quantiles it sent).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from typing import Any

from ophiond.store.queries import iso_ns
from ophiond.timespec import to_ns

_NICE_STEPS_S = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
_TARGET_STEPS = 60
_QUANTILES = (0.5, 0.95, 0.99)


def default_step_ns(since: dt.datetime, now: dt.datetime) -> int:
    """A round step that cuts the window into about sixty."""
    window = (now - since).total_seconds()
    for step in _NICE_STEPS_S:
        if window / step <= _TARGET_STEPS:
            return step * 1_000_000_000
    return _NICE_STEPS_S[-1] * 1_000_000_000


def metric_series(
    name: str,
    points: list[dict[str, Any]],
    since: dt.datetime,
    now: dt.datetime,
    step_ns: int | None,
) -> dict[str, Any]:
    """The series of one metric over ``[since, now]`` in steps of ``step_ns``."""
    step = step_ns or default_step_ns(since, now)
    start = to_ns(since) // step * step
    first = points[0]
    metric_type = first["metric_type"]
    series: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for point in points:
        series.setdefault((point["service_name"], point["attributes"]), []).append(point)
    out = []
    for (service, attributes), group in series.items():
        group.sort(key=lambda p: p["time_ns"])
        if metric_type == "gauge":
            kind, values = "value", _gauge(group, start, step)
        elif metric_type == "sum" and first["is_monotonic"]:
            kind, values = "rate", _rate(group, start, step)
        elif metric_type == "sum":
            kind, values = "value", _last(group, start, step)
        elif metric_type in ("histogram", "exponential_histogram"):
            kind, values = "quantiles", _histogram(group, start, step)
        else:
            kind, values = "quantiles", _summary(group, start, step)
        out.append(
            {
                "service": service,
                "attributes": json.loads(attributes) if attributes else {},
                "kind": kind,
                "points": values,
            }
        )
    return {
        "name": name,
        "type": metric_type,
        "unit": first["unit"],
        "step_ns": step,
        "since": since.isoformat(),
        "series": out,
    }


def _bucketed(items: Iterable[tuple[int, Any]], start: int, step: int) -> dict[int, list[Any]]:
    steps: dict[int, list[Any]] = {}
    for time_ns, value in items:
        key = start + (time_ns - start) // step * step
        steps.setdefault(key, []).append(value)
    return steps


def _gauge(points: list[dict[str, Any]], start: int, step: int) -> list[dict[str, Any]]:
    steps = _bucketed(
        ((p["time_ns"], p["value"]) for p in points if p["value"] is not None), start, step
    )
    return [{"time": iso_ns(t), "value": sum(v) / len(v)} for t, v in sorted(steps.items())]


def _last(points: list[dict[str, Any]], start: int, step: int) -> list[dict[str, Any]]:
    steps = _bucketed(
        ((p["time_ns"], p["value"]) for p in points if p["value"] is not None), start, step
    )
    return [{"time": iso_ns(t), "value": v[-1]} for t, v in sorted(steps.items())]


def _counts_from_start(point: dict[str, Any], window_start: int) -> bool:
    """A cumulative point whose start time lies in the window counts everything since then."""
    return bool(point["start_ns"]) and point["start_ns"] >= window_start


def _increments(
    points: list[dict[str, Any]], field: str, window_start: int
) -> list[tuple[int, Any]]:
    """(time, increase since the previous point) for cumulative points; a drop or a new start
    time is a reset, where the point's whole value is the increase."""
    out = []
    previous: dict[str, Any] | None = None
    for point in points:
        value = point[field]
        if value is None:
            continue
        if point["temporality"] == "DELTA":
            out.append((point["time_ns"], value))
        elif previous is None:
            if _counts_from_start(point, window_start):
                out.append((point["time_ns"], value))
        else:
            reset = point["start_ns"] != previous["start_ns"] or value < previous[field]
            out.append((point["time_ns"], value if reset else value - previous[field]))
        previous = point
    return out


def _rate(points: list[dict[str, Any]], start: int, step: int) -> list[dict[str, Any]]:
    steps = _bucketed(_increments(points, "value", start), start, step)
    seconds = step / 1e9
    return [{"time": iso_ns(t), "value": sum(v) / seconds} for t, v in sorted(steps.items())]


def _buckets(point: dict[str, Any], scale: int | None = None) -> dict[float, int]:
    """{upper bound: count} of one histogram point (explicit or exponential).

    An exponential point can be given at a coarser ``scale`` than its own (the SDK lowers the
    scale as the range of values grows): each bucket then folds into the one holding it.
    """
    if point["metric_type"] == "histogram":
        bounds = list(point["explicit_bounds"] or []) + [math.inf]
        return dict(zip(bounds, point["bucket_counts"] or [], strict=False))
    own_scale = point["scale"] or 0
    scale = own_scale if scale is None else min(scale, own_scale)
    shift = own_scale - scale
    base = 2.0 ** (2.0**-scale)
    out: dict[float, int] = {}
    if point["zero_count"]:
        out[0.0] = point["zero_count"]
    for offset_key, counts_key, sign in (
        ("positive_offset", "positive_bucket_counts", 1),
        ("negative_offset", "negative_bucket_counts", -1),
    ):
        offset = point[offset_key] or 0
        for i, count in enumerate(point[counts_key] or []):
            if count:
                # Index k holds values in (base**k, base**(k+1)]; negatives mirror that, so a
                # negative bucket's upper bound is -(base**k).
                index = (offset + i) >> shift
                bound = base ** (index + 1) if sign > 0 else -(base**index)
                out[bound] = out.get(bound, 0) + count
    return out


def _histogram(points: list[dict[str, Any]], start: int, step: int) -> list[dict[str, Any]]:
    # Exponential points are all read at the series' coarsest scale, so buckets line up.
    exponential = points[0]["metric_type"] == "exponential_histogram"
    scale = min(p["scale"] or 0 for p in points) if exponential else None
    increments: list[tuple[int, dict[float, int]]] = []
    previous: dict[float, int] | None = None
    previous_start: int | None = None
    for point in points:
        buckets = _buckets(point, scale)
        if point["temporality"] == "DELTA":
            increments.append((point["time_ns"], buckets))
        elif previous is None:
            if _counts_from_start(point, start):
                increments.append((point["time_ns"], buckets))
        else:
            diff = {b: c - previous.get(b, 0) for b, c in buckets.items()}
            reset = point["start_ns"] != previous_start or any(c < 0 for c in diff.values())
            increments.append((point["time_ns"], buckets if reset else diff))
        previous, previous_start = buckets, point["start_ns"]
    base = 2.0 ** (2.0 ** -(scale or 0)) if exponential else None
    out = []
    seconds = step / 1e9
    for t, group in sorted(_bucketed(increments, start, step).items()):
        total: dict[float, int] = {}
        for buckets in group:
            for bound, count in buckets.items():
                total[bound] = total.get(bound, 0) + count
        count = sum(total.values())
        quantiles = {f"p{round(q * 100)}": _quantile(total, q, base) for q in _QUANTILES}
        out.append({"time": iso_ns(t), "count_rate": count / seconds, **quantiles})
    return out


def _lower_edge(upper: float, previous_upper: float | None, base: float | None) -> float:
    if base is not None:  # exponential: each bucket has its own lower edge
        return 0.0 if upper == 0 else upper / base if upper > 0 else upper * base
    if previous_upper is not None:
        return previous_upper
    return min(0.0, upper)  # the first explicit bucket reaches down to 0 (or to its bound)


def _quantile(buckets: dict[float, int], q: float, base: float | None) -> float | None:
    """Linear interpolation within the bucket where the q-th observation falls; ``base`` is
    the exponential histogram's bucket ratio, None for explicit bounds."""
    count = sum(buckets.values())
    if count <= 0:
        return None
    rank = q * count
    seen = 0
    previous_upper: float | None = None
    for upper, n in sorted(buckets.items()):
        if n > 0 and seen + n >= rank:
            low = _lower_edge(upper, previous_upper, base)
            if math.isinf(upper):
                return low  # the overflow bucket has no upper edge: report its lower edge
            if upper == 0:
                return 0.0  # the zero bucket
            return low + (upper - low) * ((rank - seen) / n)
        seen += n
        previous_upper = upper
    return previous_upper


def _summary(points: list[dict[str, Any]], start: int, step: int) -> list[dict[str, Any]]:
    def pick(point: dict[str, Any], q: float) -> float | None:
        pairs = list(zip(point["quantiles"] or [], point["quantile_values"] or [], strict=False))
        if not pairs:
            return None
        value: float = min(pairs, key=lambda pair: abs(pair[0] - q))[1]
        return value

    steps = _bucketed(((p["time_ns"], p) for p in points), start, step)
    return [
        {"time": iso_ns(t), **{f"p{round(q * 100)}": pick(group[-1], q) for q in _QUANTILES}}
        for t, group in sorted(steps.items())
    ]
