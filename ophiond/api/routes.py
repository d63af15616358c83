"""The query endpoints of the local API: parse the parameters, ask :mod:`store.queries`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ophiond.api.server import ApiRequest, Role, Route
from ophiond.errors import NotFound, OphionError, TimeSpecError
from ophiond.store.metricseries import metric_series
from ophiond.store.queries import LogSearch, Queries, TraceSearch, severity_floor
from ophiond.timespec import parse_duration_ns, parse_since

if TYPE_CHECKING:
    from ophiond.store.feed import LogFeed
    from ophiond.store.partitions import PartitionSet

_DEFAULT_SINCE = "1h"


def _since(
    request: ApiRequest, default: str = _DEFAULT_SINCE, now: dt.datetime | None = None
) -> dt.datetime:
    return parse_since(request.param("since") or default, now)


def _int_param(request: ApiRequest, name: str, default: int, low: int, high: int) -> int:
    text = request.param(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise OphionError(f"{name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise OphionError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _duration_ns(text: str, name: str) -> int:
    try:
        return parse_duration_ns(text)
    except TimeSpecError as e:
        raise TimeSpecError(f"{name}: {e.message}", hint=e.hint) from None


def _attributes(request: ApiRequest) -> list[tuple[str, str]]:
    pairs = []
    for item in request.params("attr"):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OphionError(f"attribute filter {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def query_routes(partitions: PartitionSet, feed: LogFeed, timeout_s: float) -> list[Route]:
    """The read-only query endpoints; each query is interrupted after ``timeout_s``."""
    queries = Queries(partitions, timeout_s)

    def services(request: ApiRequest) -> dict[str, Any]:
        # One clock reading for both ends: `since=15m` with `step=15s` is exactly 60 steps.
        now = dt.datetime.now(dt.UTC)
        since = _since(request, now=now)
        step = request.param("step")
        if step is None:
            return {"since": since.isoformat(), "services": queries.services(since, now)}
        step_ns = _duration_ns(step, "step")
        return {
            "since": since.isoformat(),
            "step_ns": step_ns,
            "services": queries.services(since, now, step_ns),
        }

    def traces(request: ApiRequest) -> dict[str, Any]:
        status = request.param("status")
        if status not in (None, "ok", "error"):
            raise OphionError(f"status must be ok or error, not {status!r}")
        sort = request.param("sort") or "start"
        if sort not in ("start", "duration"):
            raise OphionError(
                f"sort must be start or duration, not {sort!r}",
                hint="start lists the newest traces first, duration the slowest",
            )
        min_d, max_d = request.param("min_duration"), request.param("max_duration")
        search = TraceSearch(
            since=_since(request),
            service=request.param("service"),
            name=request.param("name"),
            min_duration_ns=parse_duration_ns(min_d) if min_d else None,
            max_duration_ns=parse_duration_ns(max_d) if max_d else None,
            status=status,
            attributes=_attributes(request),
            limit=_int_param(request, "limit", 20, 1, 10_000),
            sort=sort,
        )
        return {"since": search.since.isoformat(), "traces": queries.traces(search)}

    def trace(request: ApiRequest) -> dict[str, Any]:
        return queries.trace(request.path_params["trace_id"])

    def _log_search(request: ApiRequest) -> LogSearch:
        severity = request.param("severity")
        return LogSearch(
            since=_since(request),
            service=request.param("service"),
            min_severity=severity_floor(severity) if severity else None,
            grep=request.param("grep"),
            trace_id=request.param("trace"),
            limit=_int_param(request, "limit", 100, 1, 100_000),
        )

    def logs(request: ApiRequest) -> dict[str, Any]:
        return {"logs": queries.logs(_log_search(request))}

    def logs_stream(request: ApiRequest) -> Iterator[dict[str, Any] | None]:
        # Everything that can fail (parameters, the backlog query) happens here, before the
        # answer's headers are sent; only then does the stream start.
        search = _log_search(request)
        # Subscribe before reading the backlog, so nothing committed in between is missed; what
        # arrives in both is dropped from the live side.
        subscription = feed.subscribe()
        try:
            backlog = queries.logs(search)
        except BaseException:
            subscription.close()
            raise
        return _follow(backlog, subscription, search, request)

    def _follow(
        backlog: list[dict[str, Any]], subscription: Any, search: LogSearch, request: ApiRequest
    ) -> Iterator[dict[str, Any] | None]:
        try:
            yield from backlog
            already = {(r["time_ns"], r["span_id"], r["body"]) for r in backlog}
            for record in subscription.records(search, request.cancelled):
                if record is not None and "time_ns" in record:  # not a keep-alive or a gap
                    key = (record["time_ns"], record["span_id"], record["body"])
                    if key in already:
                        continue
                yield record
        finally:
            subscription.close()

    def metrics(request: ApiRequest) -> dict[str, Any]:
        since = _since(request)
        return {"since": since.isoformat(), "metrics": queries.metric_names(since)}

    def metric(request: ApiRequest) -> dict[str, Any]:
        name = request.path_params["name"]
        since = _since(request)
        now = dt.datetime.now(dt.UTC)
        step = request.param("step")
        points = queries.metric_points(name, since, request.param("service"))
        if not points:
            raise NotFound(
                f"no points of metric {name!r} since {since.isoformat(timespec='seconds')}",
                hint="ophion metrics lists the metrics that have points",
            )
        return metric_series(name, points, since, now, parse_duration_ns(step) if step else None)

    def service_map(request: ApiRequest) -> dict[str, Any]:
        since = _since(request)
        return {"since": since.isoformat(), **queries.service_map(since)}

    return [
        Route("GET", "/api/v1/services", Role.READ, services),
        Route("GET", "/api/v1/traces", Role.READ, traces),
        Route("GET", "/api/v1/traces/{trace_id}", Role.READ, trace),
        Route("GET", "/api/v1/logs", Role.READ, logs),
        Route("GET", "/api/v1/logs/stream", Role.READ, logs_stream, stream=True),
        Route("GET", "/api/v1/metrics", Role.READ, metrics),
        Route("GET", "/api/v1/metrics/{name}", Role.READ, metric),
        Route("GET", "/api/v1/map", Role.READ, service_map),
    ]
