"""The query endpoints of the local API: read the parameters into the contract's request types,
which check them, and ask :mod:`store.queries`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ophiond.api import contract
from ophiond.api.contract import (
    AuditQuery,
    FirstSeenQuery,
    LogQuery,
    MetricQuery,
    ServicesQuery,
    TraceQuery,
    check_since,
)
from ophiond.api.server import ApiRequest, Route
from ophiond.errors import NotFound
from ophiond.store.metricseries import metric_series
from ophiond.store.queries import LogSearch, Queries

if TYPE_CHECKING:
    from ophiond.state.audit import AuditLog
    from ophiond.store.feed import LogFeed
    from ophiond.store.partitions import PartitionSet


def _since(request: ApiRequest, default: str = "1h") -> str:
    return request.param("since") or default


def _log_query(request: ApiRequest) -> LogQuery:
    return LogQuery(
        since=_since(request),
        service=request.param("service"),
        severity=request.param("severity"),
        grep=request.param("grep"),
        trace=request.param("trace"),
        limit=request.param("limit") or 100,
    )


def query_routes(partitions: PartitionSet, feed: LogFeed, timeout_s: float) -> list[Route]:
    """The read-only query endpoints; each query is interrupted after ``timeout_s``."""
    queries = Queries(partitions, timeout_s)

    def services(request: ApiRequest) -> dict[str, Any]:
        # One clock reading for both ends: `since=15m` with `step=15s` is exactly 60 steps.
        now = dt.datetime.now(dt.UTC)
        since, step_ns = ServicesQuery(_since(request), request.param("step")).check(now)
        if step_ns is None:
            return {"since": since.isoformat(), "services": queries.services(since, now)}
        return {
            "since": since.isoformat(),
            "step_ns": step_ns,
            "services": queries.services(since, now, step_ns),
        }

    def traces(request: ApiRequest) -> dict[str, Any]:
        search = TraceQuery(
            since=_since(request),
            service=request.param("service"),
            name=request.param("name"),
            min_duration=request.param("min_duration"),
            max_duration=request.param("max_duration"),
            status=request.param("status"),
            attr=tuple(request.params("attr")),
            limit=request.param("limit") or 20,
            sort=request.param("sort") or "start",
        ).check()
        return {"since": search.since.isoformat(), "traces": queries.traces(search)}

    def trace(request: ApiRequest) -> dict[str, Any]:
        return queries.trace(request.path_params["trace_id"])

    def logs(request: ApiRequest) -> dict[str, Any]:
        return {"logs": queries.logs(_log_query(request).check())}

    def logs_stream(request: ApiRequest) -> Iterator[dict[str, Any] | None]:
        # Everything that can fail (parameters, the backlog query) happens here, before the
        # answer's headers are sent; only then does the stream start.
        search = _log_query(request).check()
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
        since = check_since(_since(request))
        return {"since": since.isoformat(), "metrics": queries.metric_names(since)}

    def metric(request: ApiRequest) -> dict[str, Any]:
        name = request.path_params["name"]
        now = dt.datetime.now(dt.UTC)
        query = MetricQuery(name, _since(request), request.param("service"), request.param("step"))
        since, step_ns = query.check()
        points = queries.metric_points(name, since, query.service)
        if not points:
            raise NotFound(
                f"no points of metric {name!r} since {since.isoformat(timespec='seconds')}",
                hint="ophion metrics lists the metrics that have points",
            )
        return metric_series(name, points, since, now, step_ns)

    def service_map(request: ApiRequest) -> dict[str, Any]:
        since = check_since(_since(request))
        return {"since": since.isoformat(), **queries.service_map(since)}

    def first_seen(request: ApiRequest) -> dict[str, Any]:
        key, value, since = FirstSeenQuery(
            request.param("resource_attribute") or "", _since(request)
        ).check()
        found = queries.first_seen(key, value, since)
        if found is None:
            return {"found": False, "signal": None, "service": None, "what": None, "at": None}
        return {"found": True, **found}

    return [
        Route(contract.SERVICES, services),
        Route(contract.TRACES, traces),
        Route(contract.TRACE, trace),
        Route(contract.LOGS, logs),
        Route(contract.LOG_STREAM, logs_stream),
        Route(contract.METRICS, metrics),
        Route(contract.METRIC, metric),
        Route(contract.SERVICE_MAP, service_map),
        Route(contract.FIRST_SEEN, first_seen),
    ]


def audit_routes(audit: AuditLog) -> list[Route]:
    """``/api/v1/audit``: the audit log, newest first (admin)."""

    def entries(request: ApiRequest) -> dict[str, Any]:
        since, action, limit = AuditQuery(
            _since(request, "7d"),
            request.param("action"),
            request.param("limit") or 100,
        ).check()
        return {
            "since": since.isoformat(),
            "entries": [e.to_json() for e in audit.entries(since, action, limit)],
        }

    return [Route(contract.AUDIT, entries)]
