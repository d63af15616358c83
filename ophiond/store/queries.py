"""The questions the CLI and the TUI ask, answered as JSON-ready documents.

Every query reads the ``raw_*`` views (nanosecond timestamps as stored, nothing computed), so
filters on time, service, name and status reach the stored columns and their zone maps.
Durations travel as nanoseconds, times as ISO 8601 UTC strings.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ophiond.errors import OphionError
from ophiond.timespec import to_ns

if TYPE_CHECKING:
    from ophiond.store.partitions import PartitionSet


class NotFound(OphionError):
    """What was asked for is not in the store (HTTP 404)."""

    http_status = 404


# Severity numbers of the OpenTelemetry log data model: each level's lowest number.
SEVERITY_LEVELS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}


def severity_floor(level: str) -> int:
    """The lowest severity number of ``level`` (``warn`` means warn and above)."""
    try:
        return SEVERITY_LEVELS[level.lower().removesuffix("ing")]
    except KeyError:
        raise OphionError(
            f"{level!r} is not a severity", hint="use trace, debug, info, warn, error or fatal"
        ) from None


def iso_ns(ns: int | None) -> str | None:
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=rest // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def _json(text: str | None) -> Any:
    return json.loads(text) if text else {}


def _attr_path(key: str) -> str:
    # JSON path syntax inside the quoted key (wildcards, brackets) cannot be escaped in DuckDB.
    if not key or any(c in key for c in '"*[]$\\'):
        raise OphionError(
            f"attribute key {key!r} cannot be filtered on",
            hint='keys may not contain " * [ ] $ or backslashes',
        )
    return '$."' + key + '"'


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _ts(moment: dt.datetime) -> str:
    """A literal-free TIMESTAMP_NS parameter: nanoseconds, cast in SQL with make_timestamp_ns."""
    return str(to_ns(moment))


class Queries:
    """Runs the queries on cursors of the daemon's DuckDB instance."""

    def __init__(self, partitions: PartitionSet, timeout_s: float) -> None:
        self.partitions = partitions
        self.timeout_s = timeout_s

    def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """Rows as dicts; interrupted after ``sql_timeout`` like ``ophion sql``."""
        from ophiond.store.query import fetch_limited

        description, rows = fetch_limited(self.partitions, sql, params, self.timeout_s, None)
        names = [d[0] for d in description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    # -- services ------------------------------------------------------------------------------

    def services(self, since: dt.datetime, now: dt.datetime) -> list[dict[str, Any]]:
        """Per service: request and error rates and p50/p95/p99 of its requests.

        A service's requests are its SERVER and CONSUMER spans; a service that reports no
        such kinds is measured by its root spans instead.
        """
        window_s = max((now - since).total_seconds(), 1e-9)
        rows = self._rows(
            """
            WITH s AS (
                SELECT service_name, duration_ns, status_code = 'ERROR' AS error,
                       epoch_ns(end_time) AS end_ns,
                       kind IN ('SERVER', 'CONSUMER') AS served,
                       parent_span_id IS NULL AS root
                FROM raw_spans
                WHERE start_time >= make_timestamp_ns(?::BIGINT)
            ),
            per AS (
                SELECT service_name, bool_or(served) AS has_served, count(*) AS spans,
                       max(end_ns) AS last_ns
                FROM s GROUP BY service_name
            ),
            requests AS (
                SELECT s.service_name, count(*) AS requests, count(*) FILTER (WHERE error) AS errors,
                       quantile_cont(duration_ns, [0.5, 0.95, 0.99]) AS q
                FROM s JOIN per USING (service_name)
                WHERE CASE WHEN per.has_served THEN s.served ELSE s.root END
                GROUP BY s.service_name
            )
            SELECT per.service_name, per.spans, per.last_ns, per.has_served,
                   coalesce(requests.requests, 0) AS requests, coalesce(requests.errors, 0) AS errors,
                   requests.q
            FROM per LEFT JOIN requests USING (service_name)
            ORDER BY per.service_name NULLS LAST
            """,
            [_ts(since)],
        )
        out = []
        for row in rows:
            requests = row["requests"]
            q = row["q"] or [None, None, None]
            out.append(
                {
                    "service": row["service_name"],
                    "requests": requests,
                    "request_rate": requests / window_s,
                    "errors": row["errors"],
                    "error_rate": row["errors"] / requests if requests else 0.0,
                    "p50_ns": _int(q[0]),
                    "p95_ns": _int(q[1]),
                    "p99_ns": _int(q[2]),
                    "spans": row["spans"],
                    "measured_by": "server_spans" if row["has_served"] else "root_spans",
                    "last_seen": iso_ns(row["last_ns"]),
                }
            )
        return out

    # -- traces --------------------------------------------------------------------------------

    def traces(self, search: TraceSearch) -> list[dict[str, Any]]:
        """Traces with a span matching the span filters, newest first."""
        where = ["start_time >= make_timestamp_ns(?::BIGINT)"]
        params: list[Any] = [_ts(search.since)]
        if search.service:
            where.append("service_name = ?")
            params.append(search.service)
        if search.name:
            where.append("name = ?")
            params.append(search.name)
        for key, value in search.attributes:
            where.append(
                "coalesce(json_extract_string(attributes, ?), "
                "json_extract_string(resource_attributes, ?)) = ?"
            )
            params += [_attr_path(key), _attr_path(key), value]
        having = []
        if search.min_duration_ns is not None:
            having.append("duration_ns >= ?")
        if search.max_duration_ns is not None:
            having.append("duration_ns <= ?")
        if search.status == "error":
            having.append("error")
        elif search.status == "ok":
            having.append("NOT error")
        rows = self._rows(
            f"""
            WITH matched AS (
                SELECT trace_id FROM raw_spans WHERE {" AND ".join(where)}
                GROUP BY trace_id
                {"" if having else "ORDER BY max(start_time) DESC LIMIT ?"}
            ),
            t AS (
                SELECT trace_id,
                       min(epoch_ns(start_time)) AS start_ns,
                       max(epoch_ns(end_time)) - min(epoch_ns(start_time)) AS duration_ns,
                       count(*) AS spans,
                       bool_or(status_code = 'ERROR') AS error,
                       list(DISTINCT service_name ORDER BY service_name) AS services,
                       first(service_name ORDER BY parent_span_id IS NOT NULL, start_time) AS root_service,
                       first(name ORDER BY parent_span_id IS NOT NULL, start_time) AS root_name
                FROM raw_spans WHERE trace_id IN (SELECT trace_id FROM matched)
                GROUP BY trace_id
            )
            SELECT * FROM t
            {"WHERE " + " AND ".join(having) if having else ""}
            ORDER BY start_ns DESC
            LIMIT ?
            """,
            params
            # Without trace-level filters only the newest `limit` traces are aggregated.
            + ([] if having else [search.limit])
            + [v for v in (search.min_duration_ns, search.max_duration_ns) if v is not None]
            + [search.limit],
        )
        return [
            {
                "trace_id": row["trace_id"],
                "root_service": row["root_service"],
                "root_name": row["root_name"],
                "start": iso_ns(row["start_ns"]),
                "duration_ns": row["duration_ns"],
                "spans": row["spans"],
                "error": row["error"],
                "services": [s for s in row["services"] if s is not None],
            }
            for row in rows
        ]

    def trace(self, trace_id: str) -> dict[str, Any]:
        """One trace, all its spans with events and links, and its critical path.

        ``trace_id`` may be a unique prefix of the id.
        """
        prefix = trace_id.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise OphionError(f"{trace_id!r} is not a trace id", hint="trace ids are hex digits")
        if len(prefix) == 32:
            ids = [prefix]  # a whole id: no prefix search, straight to the spans
        else:
            ids = [
                row["trace_id"]
                for row in self._rows(
                    "SELECT DISTINCT trace_id FROM raw_spans WHERE trace_id LIKE ? ESCAPE '\\' "
                    "LIMIT 6",
                    [_like_prefix(prefix)],
                )
            ]
        if not ids:
            raise NotFound(
                f"no trace {trace_id} in the store",
                hint="it may be older than the retention, or not sent yet: ophion traces lists them",
            )
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise OphionError(
                f"{trace_id} is the start of several trace ids: {shown}",
                hint="give more digits",
            )
        full = ids[0]
        spans = self._rows(
            """
            SELECT span_id, parent_span_id, service_name, name, kind, status_code, status_message,
                   epoch_ns(start_time) AS start_ns, epoch_ns(end_time) AS end_ns, duration_ns,
                   attributes, resource_attributes, scope_name, scope_version, trace_state
            FROM raw_spans WHERE trace_id = ? ORDER BY start_time, span_id
            """,
            [full],
        )
        events = self._rows(
            "SELECT span_id, epoch_ns(time) AS time_ns, name, attributes FROM raw_span_events "
            "WHERE trace_id = ? ORDER BY time",
            [full],
        )
        links = self._rows(
            "SELECT span_id, linked_trace_id, linked_span_id, attributes FROM raw_span_links "
            "WHERE trace_id = ?",
            [full],
        )
        if not spans:
            raise NotFound(
                f"no trace {trace_id} in the store",
                hint="it may be older than the retention, or not sent yet: ophion traces lists them",
            )
        by_span: dict[str, dict[str, Any]] = {}
        for span in spans:
            span["attributes"] = _json(span["attributes"])
            span["resource_attributes"] = _json(span["resource_attributes"])
            span["start"] = iso_ns(span["start_ns"])
            span["events"] = []
            span["links"] = []
            by_span[span["span_id"]] = span
        for event in events:
            if event["span_id"] in by_span:
                by_span[event.pop("span_id")]["events"].append(
                    {**event, "attributes": _json(event["attributes"])}
                )
        for link in links:
            if link["span_id"] in by_span:
                by_span[link.pop("span_id")]["links"].append(
                    {**link, "attributes": _json(link["attributes"])}
                )
        start = min(s["start_ns"] for s in spans)
        end = max(s["end_ns"] for s in spans)
        return {
            "trace_id": full,
            "start": iso_ns(start),
            "start_ns": start,
            "duration_ns": end - start,
            "services": sorted({s["service_name"] for s in spans if s["service_name"]}),
            "error": any(s["status_code"] == "ERROR" for s in spans),
            "critical_path": critical_path(spans),
            "spans": spans,
        }

    # -- logs ----------------------------------------------------------------------------------

    def logs(self, search: LogSearch) -> list[dict[str, Any]]:
        """The newest ``limit`` records that match, in time order (oldest first, like a tail)."""
        where, params = search.sql_filter()
        rows = self._rows(
            f"""
            SELECT * FROM (
                SELECT epoch_ns(timestamp) AS time_ns, service_name, severity_number,
                       severity_text, body, body_type, trace_id, span_id, attributes
                FROM raw_logs WHERE {where}
                ORDER BY timestamp DESC LIMIT ?
            ) ORDER BY time_ns
            """,
            [*params, search.limit],
        )
        return [log_document(row) for row in rows]

    # -- metrics -------------------------------------------------------------------------------

    def metric_names(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Every metric seen since ``since``: type, unit, services, number of series."""
        rows = self._rows(
            """
            SELECT metric_name, any_value(metric_type) AS metric_type, any_value(unit) AS unit,
                   any_value(description) AS description,
                   list(DISTINCT service_name ORDER BY service_name) AS services,
                   count(DISTINCT (service_name, attributes)) AS series,
                   max(epoch_ns(timestamp)) AS last_ns
            FROM raw_metric_points WHERE timestamp >= make_timestamp_ns(?::BIGINT)
            GROUP BY metric_name ORDER BY metric_name
            """,
            [_ts(since)],
        )
        return [
            {
                "name": row["metric_name"],
                "type": row["metric_type"],
                "unit": row["unit"],
                "description": row["description"],
                "services": [s for s in row["services"] if s is not None],
                "series": row["series"],
                "last_seen": iso_ns(row["last_ns"]),
            }
            for row in rows
        ]

    def metric_points(
        self, name: str, since: dt.datetime, service: str | None
    ) -> list[dict[str, Any]]:
        """The raw points of one metric, oldest first (the series math is in metricseries)."""
        where = "metric_name = ? AND timestamp >= make_timestamp_ns(?::BIGINT)"
        params: list[Any] = [name, _ts(since)]
        if service:
            where += " AND service_name = ?"
            params.append(service)
        return self._rows(
            f"""
            SELECT metric_type, unit, temporality, is_monotonic, service_name, attributes,
                   epoch_ns(start_time) AS start_ns, epoch_ns(timestamp) AS time_ns, value,
                   count, sum, bucket_counts, explicit_bounds, scale, zero_count,
                   positive_offset, positive_bucket_counts, negative_offset,
                   negative_bucket_counts, quantiles, quantile_values
            FROM raw_metric_points WHERE {where}
            ORDER BY service_name, attributes, timestamp
            """,
            params,
        )

    # -- service map ---------------------------------------------------------------------------

    def service_map(self, since: dt.datetime) -> dict[str, Any]:
        """Calls between services: a span whose parent belongs to another service is a call."""
        edges = self._rows(
            """
            SELECT p.service_name AS source, c.service_name AS target,
                   count(*) AS calls, count(*) FILTER (WHERE c.status_code = 'ERROR') AS errors,
                   quantile_cont(c.duration_ns, 0.95) AS p95
            FROM raw_spans c
            JOIN raw_spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
            WHERE c.start_time >= make_timestamp_ns(?::BIGINT)
              -- a parent starts before its child, and traces last far less than an hour: this
              -- bound lets the parent side skip old data instead of scanning every span
              AND p.start_time >= make_timestamp_ns(?::BIGINT) - INTERVAL 1 HOUR
              AND c.service_name IS DISTINCT FROM p.service_name
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            [_ts(since), _ts(since)],
        )
        nodes = self._rows(
            "SELECT DISTINCT service_name FROM raw_spans "
            "WHERE start_time >= make_timestamp_ns(?::BIGINT) ORDER BY 1",
            [_ts(since)],
        )
        return {
            "services": [n["service_name"] for n in nodes if n["service_name"] is not None],
            "edges": [
                {
                    "source": e["source"],
                    "target": e["target"],
                    "calls": e["calls"],
                    "errors": e["errors"],
                    "error_rate": e["errors"] / e["calls"] if e["calls"] else 0.0,
                    "p95_ns": _int(e["p95"]),
                }
                for e in edges
            ],
        }


def _int(value: float | None) -> int | None:
    return None if value is None else int(round(value))


@dataclass
class TraceSearch:
    """The filters of ``ophion traces``."""

    since: dt.datetime
    service: str | None = None
    name: str | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    status: str | None = None  # "ok" | "error"
    attributes: list[tuple[str, str]] = field(default_factory=list)
    limit: int = 20


@dataclass
class LogSearch:
    """The filters of ``ophion logs``; also applied in Python to records that stream in."""

    since: dt.datetime
    service: str | None = None
    min_severity: int | None = None
    grep: str | None = None
    trace_id: str | None = None
    limit: int = 100

    def sql_filter(self) -> tuple[str, list[Any]]:
        where = ["timestamp >= make_timestamp_ns(?::BIGINT)"]
        params: list[Any] = [_ts(self.since)]
        if self.service:
            where.append("service_name = ?")
            params.append(self.service)
        if self.min_severity is not None:
            where.append("severity_number >= ?")
            params.append(self.min_severity)
        if self.grep:
            where.append("body ILIKE ? ESCAPE '\\'")
            params.append("%" + _like_prefix(self.grep))
        if self.trace_id:
            where.append("trace_id LIKE ? ESCAPE '\\'")
            params.append(_like_prefix(self.trace_id.lower()))
        return " AND ".join(where), params

    def matches(self, record: dict[str, Any]) -> bool:
        """The same filter as :meth:`sql_filter`, for one record as a dict (time excluded)."""
        if self.service and record["service_name"] != self.service:
            return False
        if self.min_severity is not None and (record["severity_number"] or 0) < self.min_severity:
            return False
        if self.grep and self.grep.lower() not in (record["body"] or "").lower():
            return False
        return not (
            self.trace_id and not (record["trace_id"] or "").startswith(self.trace_id.lower())
        )


def log_document(row: dict[str, Any]) -> dict[str, Any]:
    """A log record as the API returns it."""
    return {
        "time": iso_ns(row["time_ns"]),
        "time_ns": row["time_ns"],
        "service": row["service_name"],
        "severity_number": row["severity_number"],
        "severity": row["severity_text"],
        "body": row["body"],
        "body_type": row["body_type"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "attributes": row["attributes"]
        if isinstance(row["attributes"], dict)
        else _json(row["attributes"]),
    }


def critical_path(spans: list[dict[str, Any]]) -> list[str]:
    """Span ids on the trace's critical path: what the root actually waited for.

    From each span, walk its children from the last to finish backwards: a child that ends
    before the cursor is on the path (and recursively its own critical children), and the
    cursor moves to where it started. The root is the earliest span without a parent here.
    """
    if not spans:
        return []
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent in by_id:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    root = min(roots, key=lambda s: (s["start_ns"], -s["end_ns"]))
    path: list[str] = []

    def walk(span: dict[str, Any], until: int) -> None:
        path.append(span["span_id"])
        cursor = min(span["end_ns"], until)
        for child in sorted(children.get(span["span_id"], []), key=lambda c: -c["end_ns"]):
            # A child that outlives its parent counts up to the parent's end. A child still
            # running at the cursor ran beside the one already chosen: not on the path.
            end = min(child["end_ns"], span["end_ns"])
            if span["start_ns"] < end <= cursor:
                walk(child, end)
                cursor = child["start_ns"]

    walk(root, root["end_ns"])
    return path
