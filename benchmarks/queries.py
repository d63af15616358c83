"""Query times through the daemon's API, as the CLI sees them (Unix socket, HTTP, JSON).

Each query runs once untimed (a freshly started daemon reads its files into memory), then
``runs`` times; the median is the figure, with the fastest and slowest beside it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ophiond.api.client import ApiClient
from ophiond.api.contract import LogQuery, ServicesQuery, TraceQuery


@dataclass
class QueryTiming:
    """One query's times in milliseconds, and how many items its answer held."""

    name: str
    request: str
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    items: int


def time_query(
    name: str,
    request: str,
    call: Callable[[], dict[str, Any]],
    count: Callable[[dict[str, Any]], int],
    runs: int,
) -> QueryTiming:
    """Time ``call`` ``runs`` times after one warm-up call; fail if its answer is empty."""
    answer = call()
    items = count(answer)
    if items == 0:
        raise RuntimeError(f"{name} ({request}) found nothing; the benchmark data is not there")
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return QueryTiming(name, request, statistics.median(times), min(times), max(times), runs, items)


def time_queries(
    api: ApiClient, trace_id: str, attribute: tuple[str, str], grep: str, runs: int
) -> list[QueryTiming]:
    """The four queries of design section 9, each timed ``runs`` times."""
    key, value = attribute
    return [
        time_query(
            "trace_by_id",
            f"GET /traces/{trace_id}",
            lambda: api.trace(trace_id),
            lambda answer: len(answer["spans"]),
            runs,
        ),
        time_query(
            "services_1h",
            "GET /services?since=1h",
            lambda: api.services(ServicesQuery("1h")),
            lambda answer: len(answer["services"]),
            runs,
        ),
        time_query(
            "attribute_filter",
            f"GET /traces?attr={key}={value}&since=1d",
            lambda: api.traces(TraceQuery("1d", attr=(f"{key}={value}",))),
            lambda answer: len(answer["traces"]),
            runs,
        ),
        time_query(
            "log_search",
            f"GET /logs?grep={grep}&since=1d",
            lambda: api.logs(LogQuery("1d", grep=grep)),
            lambda answer: len(answer["logs"]),
            runs,
        ),
    ]
