"""The questions the CLI and the TUI ask, answered as JSON-ready documents.

Every query reads the ``raw_*`` views (nanosecond timestamps as stored, nothing computed), so
filters on time, service, name and status reach the stored columns and their zone maps.
Durations travel as nanoseconds, times as ISO 8601 UTC strings.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ophiond.errors import NotFound, OphionError, QueryError
from ophiond.store import tracefilter
from ophiond.timespec import to_ns

if TYPE_CHECKING:
    from ophiond.store.partitions import PartitionSet


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


# Attribute filters: the writer's encoder (ophiond.otlp.decode.attributes_json) writes compact
# JSON (separators "," and ":", non-ASCII as is, strings escaped by Python's json encoder, ints
# and booleans bare), and DuckDB stores that text as written. So a span that the exact test
# (json_extract_string) accepts has a known text in its attributes, and a substring search,
# several times cheaper than parsing the JSON, rules out most rows before the exact test.
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False)
_INTEGER = re.compile(r"-?[0-9]+")


def _attribute_needles(key: str, value: str) -> list[str]:
    """Texts of which at least one is in the attributes JSON of every span whose ``key`` reads
    as ``value`` with ``json_extract_string``: a pre-filter that never drops a true match."""
    member = _JSON_TEXT.encode(key) + ":"
    as_string = member + _JSON_TEXT.encode(value)
    if value in ("true", "false") or _INTEGER.fullmatch(value):
        # Also stored bare (true, 42): DuckDB renders those exactly as Python wrote them.
        return [as_string, member + value]
    if value[:1] and value[0] in "-0123456789[{":
        # A float, array or object reads back in DuckDB's rendering (1e+16 -> 10000000000000000.0,
        # [1, 2] -> [1,2]), not as written: only the key can be looked for.
        return [member]
    return [as_string]


def _attribute_text_test(key: str, value: str) -> tuple[str, list[str]]:
    """A substring test on ``attributes`` that every span holding KEY=VALUE passes."""
    needles = _attribute_needles(key, value)
    # DuckDB's contains() skips ahead with memchr on the needle's first character, and a
    # quote starts every member: the bare value (its first character rarer) is searched about
    # twice as fast, so it goes first when every needle holds it (measured at 10M spans).
    content = _JSON_TEXT.encode(value)[1:-1]
    if len(content) >= 2 and all(content in needle for needle in needles):
        either = " OR ".join("contains(attributes, ?)" for _ in needles)
        return f"contains(attributes, ?) AND ({either})", [content, *needles]
    # Otherwise one search: what all the needles start with.
    return "contains(attributes, ?)", [os.path.commonprefix(needles)]


# logs() first searches the newest 1/_RECENT_SHARE of the window.
_RECENT_SHARE = 16
# Beyond this many distinct resources, resource attributes are searched as text instead.
_MAX_RESOURCE_LIST = 1000


def _in_list(test: str, values: list[Any]) -> str:
    return f"{test} ({', '.join('?' for _ in values)})"


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _ts(moment: dt.datetime) -> str:
    """A literal-free TIMESTAMP_NS parameter: nanoseconds, cast in SQL with make_timestamp_ns."""
    return str(to_ns(moment))


# One trace: its spans (record 0, by start), events (1, by time) and links (2).
# First the flushes whose trace-id filters may hold the trace (ophiond.store.tracefilter; a row
# without bits stands for rows stored before the filters existed), then the trace's spans in
# those flushes, then its events and links in the flushes that hold its spans: the writer
# stores a span's events and links in the same flush as the span.
_TRACE_FLUSHES_SQL = """
    SELECT '{alias}' AS part, flush FROM {alias}.main.trace_filters
    WHERE bits IS NULL OR ({test})
"""
_TRACE_SPANS_SQL = """
    SELECT '{alias}' AS part, 0 AS record, span_id, parent_span_id, service_name, name, kind,
           status_code, status_message, epoch_ns(start_time) AS start_ns,
           epoch_ns(end_time) AS end_ns, duration_ns, attributes, resource_attributes,
           scope_name, scope_version, trace_state, flush
    FROM {alias}.main.spans WHERE trace_id = ?{flushes}
"""
_TRACE_EXTRAS_SQL = """
    SELECT 1 AS record, span_id, name, attributes, epoch_ns(time) AS time_ns,
           NULL AS linked_trace_id, NULL AS linked_span_id
    FROM {alias}.main.span_events WHERE trace_id = ?{flushes}
    UNION ALL
    SELECT 2 AS record, span_id, NULL AS name, attributes, NULL::BIGINT AS time_ns,
           linked_trace_id, linked_span_id
    FROM {alias}.main.span_links WHERE trace_id = ?{flushes}
"""


def _pick(records: list[dict[str, Any]], kind: int, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of one ``record`` kind of a union query, with only that kind's columns."""
    return [{k: r[k] for k in keys} for r in records if r["record"] == kind]


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

    def services(
        self, since: dt.datetime, now: dt.datetime, step_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """Per service: request and error rates and p50/p95/p99 of its requests.

        A service's requests are its SERVER and CONSUMER spans; a service that reports no
        such kinds is measured by its root spans instead. With ``step_ns``, each service also
        gets ``rate_points``: its request and error rates in steps of ``step_ns`` from
        ``since``, counted in the same statement, so they add up to ``requests``.
        """
        window_s = max((now - since).total_seconds(), 1e-9)
        # Without a step the statement is the benchmarked one: the holes below stay empty.
        start_column = rate_ctes = rate_column = rate_join = ""
        rate_params: list[Any] = []
        if step_ns is not None:
            buckets = rate_buckets(since, now, step_ns)
            start_column = ", epoch_ns(start_time) AS start_ns"
            rate_ctes = """,
            request_starts AS (
                SELECT service_name, start_ns, error FROM s WHERE served
                UNION ALL
                -- The root spans counted in `requests` (read a second time: only for services
                -- without SERVER or CONSUMER spans, and only when a step is asked for).
                SELECT service_name, epoch_ns(start_time), status_code = 'ERROR'
                FROM raw_spans
                WHERE start_time >= make_timestamp_ns(?::BIGINT) AND parent_span_id IS NULL
                  AND service_name IN (SELECT service_name FROM per WHERE has_served IS NOT TRUE)
            ),
            steps AS (
                -- A span starting after `now` (a client clock ahead) counts in the last step.
                SELECT service_name, least((start_ns - ?) // ?, ?) AS step,
                       count(*) AS requests, count(*) FILTER (WHERE error) AS errors
                FROM request_starts GROUP BY ALL
            ),
            rates AS (
                SELECT service_name,
                       list({'step': step, 'requests': requests, 'errors': errors}) AS steps
                FROM steps GROUP BY service_name
            )"""
            rate_column = ", rates.steps"
            rate_join = " LEFT JOIN rates USING (service_name)"
            rate_params = [_ts(since), to_ns(since), step_ns, buckets - 1]
        rows = self._rows(
            f"""
            WITH s AS (
                SELECT service_name, duration_ns, status_code = 'ERROR' AS error,
                       epoch_ns(end_time) AS end_ns,
                       kind IN ('SERVER', 'CONSUMER') AS served{start_column}
                FROM raw_spans
                WHERE start_time >= make_timestamp_ns(?::BIGINT)
            ),
            per AS (
                SELECT service_name, bool_or(served) AS has_served, count(*) AS spans,
                       max(end_ns) AS last_ns
                FROM s GROUP BY service_name
            ),
            requests AS (
                SELECT service_name, count(*) AS requests, count(*) FILTER (WHERE error) AS errors,
                       quantile_cont(duration_ns, [0.5, 0.95, 0.99]) AS q
                FROM s WHERE served
                GROUP BY service_name
                UNION ALL
                -- Root spans, only for services without SERVER or CONSUMER spans: reading
                -- parent_span_id (random ids) costs more than all the rest, and when every
                -- service has such spans the empty list below skips this scan entirely.
                SELECT service_name, count(*) AS requests,
                       count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
                       quantile_cont(duration_ns, [0.5, 0.95, 0.99]) AS q
                FROM raw_spans
                WHERE start_time >= make_timestamp_ns(?::BIGINT) AND parent_span_id IS NULL
                  AND service_name IN (SELECT service_name FROM per WHERE has_served IS NOT TRUE)
                GROUP BY service_name
            ){rate_ctes}
            SELECT per.service_name, per.spans, per.last_ns, per.has_served,
                   coalesce(requests.requests, 0) AS requests, coalesce(requests.errors, 0) AS errors,
                   requests.q{rate_column}
            FROM per LEFT JOIN requests USING (service_name){rate_join}
            ORDER BY per.service_name NULLS LAST
            """,
            [_ts(since), _ts(since), *rate_params],
        )
        out = []
        for row in rows:
            requests = row["requests"]
            q = row["q"] or [None, None, None]
            service = {
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
            if step_ns is not None:
                service["rate_points"] = _rate_points(row["steps"] or [], since, now, step_ns)
            out.append(service)
        return out

    # -- traces --------------------------------------------------------------------------------

    def traces(self, search: TraceSearch) -> list[dict[str, Any]]:
        """Traces with a span matching the span filters: newest first, or with
        ``sort="duration"`` slowest first."""
        where = ["start_time >= make_timestamp_ns(?::BIGINT)"]
        params: list[Any] = [_ts(search.since)]
        if search.service:
            where.append("service_name = ?")
            params.append(search.service)
        if search.name:
            where.append("name = ?")
            params.append(search.name)
        if search.attributes:
            conditions, condition_params = self._attribute_conditions(search)
            where += conditions
            params += condition_params
        having = []
        if search.min_duration_ns is not None:
            having.append("duration_ns >= ?")
        if search.max_duration_ns is not None:
            having.append("duration_ns <= ?")
        if search.status == "error":
            having.append("error")
        elif search.status == "ok":
            having.append("NOT error")
        having_params = [
            v for v in (search.min_duration_ns, search.max_duration_ns) if v is not None
        ]
        trace_filter = "WHERE " + " AND ".join(having) if having else ""
        if search.sort == "duration":
            # Slowest first, exactly: every trace with a matching span in the window is ranked
            # by max(end) - min(start) of its spans in the window, two cheap aggregates (on a
            # synthetic store of 10M spans in 1M traces: 0.14 s against 0.12 s for newest
            # first, 0.11-0.31 s behind a span filter), and only the slowest `limit`
            # get the costly aggregates of `t`. Candidates taken from the longest spans would
            # be cheaper but could miss slower traces: a trace whose spans run one after
            # another lasts longer than any of them, and a trace can last far longer than its
            # longest *matching* span. A trace that began before the window is ranked by its
            # part inside the window, as newest-first ranks traces by their matching spans.
            span_filter = ""
            if len(where) > 1:  # a span filter besides the window
                span_filter = (
                    f"AND trace_id IN (SELECT trace_id FROM raw_spans WHERE {' AND '.join(where)})"
                )
            matched = f"""
            ranked AS (
                SELECT trace_id, min(epoch_ns(start_time)) AS start_ns,
                       max(epoch_ns(end_time)) - min(epoch_ns(start_time)) AS duration_ns,
                       bool_or(status_code = 'ERROR') AS error
                FROM raw_spans
                WHERE start_time >= make_timestamp_ns(?::BIGINT) {span_filter}
                GROUP BY trace_id
            ),
            matched AS (
                SELECT trace_id FROM ranked {trace_filter}
                ORDER BY duration_ns DESC, start_ns DESC LIMIT ?
            )"""
            matched_params = [
                _ts(search.since),
                *(params if span_filter else []),
                *having_params,
                search.limit,
            ]
            order = "duration_ns DESC, start_ns DESC"
        else:
            matched = f"""
            matched AS (
                SELECT trace_id FROM raw_spans WHERE {" AND ".join(where)}
                GROUP BY trace_id
                {"" if having else "ORDER BY max(start_time) DESC LIMIT ?"}
            )"""
            # Without trace-level filters only the newest `limit` traces are aggregated.
            matched_params = params + ([] if having else [search.limit])
            order = "start_ns DESC"
        rows = self._rows(
            f"""
            WITH {matched},
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
            {trace_filter}
            ORDER BY {order}
            LIMIT ?
            """,
            matched_params + having_params + [search.limit],
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

    def _attribute_conditions(self, search: TraceSearch) -> tuple[list[str], list[Any]]:
        """SQL conditions, with their parameters, true on a span iff every KEY=VALUE holds.

        The exact test reads each span's JSON (``json_extract_string``), which costs about two
        seconds of CPU per 10M spans. Before it, cheap tests that every match passes rule out
        nearly all rows: a substring search of the attributes text (see
        :func:`_attribute_needles`), and for resource attributes, which take one value per
        process, a comparison with the few distinct resources that hold the attribute.
        """
        paths = [_attr_path(key) for key, _ in search.attributes]
        tests = ", ".join(f"json_extract_string(r, ?) = ? AS m{i}" for i in range(len(paths)))
        # Distinct resources come from DuckDB's dictionaries: ~20 ms at 10M spans.
        resources = self._rows(
            f"SELECT r, {tests} FROM (SELECT DISTINCT resource_attributes::VARCHAR AS r "
            "FROM raw_spans WHERE start_time >= make_timestamp_ns(?::BIGINT) "
            "AND resource_attributes IS NOT NULL)",
            [
                p
                for path, (_, value) in zip(paths, search.attributes, strict=True)
                for p in (path, value)
            ]
            + [_ts(search.since)],
        )
        known = [row["r"] for row in resources]
        conditions: list[str] = []
        params: list[Any] = []
        for i, (path, (key, value)) in enumerate(zip(paths, search.attributes, strict=True)):
            text_test, text_params = _attribute_text_test(key, value)
            alternatives = [f"({text_test})"]
            if not known:
                alternatives, text_params = ["true"], []  # no resources yet: nothing to rule out
            elif len(known) > _MAX_RESOURCE_LIST:
                needles = _attribute_needles(key, value)
                alternatives += ["contains(resource_attributes, ?)" for _ in needles]
                text_params += needles
            else:
                holding = [row["r"] for row in resources if row[f"m{i}"]]
                if holding:
                    alternatives.append(_in_list("resource_attributes::VARCHAR IN", holding))
                    text_params += holding
                # A resource first seen after the list above was made (committed in between)
                # goes on to the exact test.
                alternatives.append(_in_list("resource_attributes::VARCHAR NOT IN", known))
                text_params += known
            conditions.append(f"({' OR '.join(alternatives)})")
            params += text_params
            conditions.append(
                "coalesce(json_extract_string(attributes, ?), "
                "json_extract_string(resource_attributes, ?)) = ?"
            )
            params += [path, path, value]
        return conditions, params

    def _trace_records(self, trace_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The spans of a trace, and the events and links of the flushes that hold them."""
        with self.partitions.lock:
            aliases = [p.alias for p in self.partitions.partitions]
        try:
            candidates: dict[str, set[int | None]] = {}
            for row in self._rows(
                " UNION ALL ".join(
                    _TRACE_FLUSHES_SQL.format(alias=a, test=tracefilter.sql_test()) for a in aliases
                ),
                tracefilter.probes(trace_id) * len(aliases),
            ):
                candidates.setdefault(row["part"], set()).add(row["flush"])
            spans = self._trace_rows(_TRACE_SPANS_SQL, candidates, 1, trace_id, "start_ns")
            holding: dict[str, set[int | None]] = {}
            for span in spans:
                if None in candidates[span["part"]]:  # (untagged rows: no narrowing)
                    holding[span["part"]] = candidates[span["part"]]
                else:
                    holding.setdefault(span["part"], set()).add(span["flush"])
            extras = self._trace_rows(_TRACE_EXTRAS_SQL, holding, 2, trace_id, "record, time_ns")
        except QueryError:
            # A partition was deleted by retention in between: once more, with the set as it
            # is now (retention never deletes the newest, so this ends).
            with self.partitions.lock:
                if [p.alias for p in self.partitions.partitions] == aliases:
                    raise
            return self._trace_records(trace_id)
        return spans, extras

    def _trace_rows(
        self,
        sql: str,
        candidates: dict[str, set[int | None]],
        lookups: int,
        trace_id: str,
        order: str,
    ) -> list[dict[str, Any]]:
        """``sql`` (``lookups`` lookups of the trace id) over the candidate flushes of each
        partition, as one ordered query."""
        parts, params = [], []
        for alias, flushes in sorted(candidates.items()):
            if None in flushes:  # rows from before the filters: every flush is a candidate
                condition, values = "", []
            else:
                values = sorted(f for f in flushes if f is not None)
                condition = " AND " + _in_list("flush IN", values)
            parts.append(sql.format(alias=alias, flushes=condition))
            params += [trace_id, *values] * lookups
        if not parts:
            return []
        return self._rows(
            f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY {order}, span_id", params
        )

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
            # Ids are lowercase hex, so those starting with the prefix sort between it and the
            # prefix followed by "g": a range DuckDB checks against each row group's min/max.
            ids = [
                row["trace_id"]
                for row in self._rows(
                    "SELECT DISTINCT trace_id FROM raw_spans WHERE trace_id >= ? AND trace_id < ? "
                    "AND trace_id LIKE ? ESCAPE '\\' LIMIT 6",
                    [prefix, prefix + "g", _like_prefix(prefix)],
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
        spans, records = self._trace_records(full)
        events = _pick(records, 1, ("span_id", "time_ns", "name", "attributes"))
        links = _pick(records, 2, ("span_id", "linked_trace_id", "linked_span_id", "attributes"))
        for span in spans:
            del span["part"], span["record"], span["flush"]
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
        # Most searches find `limit` records among the newest ones, so the newest 16th of the
        # window is searched first: about a quarter of the cost of the whole (10M records).
        # Only when that is not enough is the whole window searched, in one statement (one
        # snapshot); a search that finds little so costs about 15% more than a single pass.
        now = dt.datetime.now(dt.UTC)
        recent = now - (now - search.since) / _RECENT_SHARE
        if recent > search.since:
            rows = self._newest_logs(search, recent)
            if len(rows) >= search.limit:
                return rows
        return self._newest_logs(search, search.since)

    def _newest_logs(self, search: LogSearch, since: dt.datetime) -> list[dict[str, Any]]:
        where, params = search.sql_filter(since)
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

    def first_seen(self, key: str, value: str, since: dt.datetime) -> dict[str, Any] | None:
        """The first span, metric point or log record since ``since`` whose resource has the
        attribute ``key`` = ``value`` (what ``ophion instrument`` waits for), or None."""
        path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
        since_ns = _ts(since)
        rows = self._rows(
            """
            SELECT * FROM (
              SELECT 'span' AS signal, service_name, name AS what, epoch_ns(start_time) AS at_ns
                FROM raw_spans
                WHERE start_time >= make_timestamp_ns(?::BIGINT)
                  AND json_extract_string(resource_attributes, ?) = ?
              UNION ALL
              SELECT 'metric', service_name, metric_name, epoch_ns(timestamp)
                FROM raw_metric_points
                WHERE timestamp >= make_timestamp_ns(?::BIGINT)
                  AND json_extract_string(resource_attributes, ?) = ?
              UNION ALL
              SELECT 'log', service_name, left(body, 120), epoch_ns(timestamp)
                FROM raw_logs
                WHERE timestamp >= make_timestamp_ns(?::BIGINT)
                  AND json_extract_string(resource_attributes, ?) = ?
            ) ORDER BY at_ns LIMIT 1
            """,
            [since_ns, path, value] * 3,
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "signal": row["signal"],
            "service": row["service_name"],
            "what": str(row["what"]),
            "at": iso_ns(row["at_ns"]),
        }

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


# At most this many rate points per service: a sparkline or chart has no use for more.
MAX_RATE_POINTS = 1000


def rate_buckets(since: dt.datetime, now: dt.datetime, step_ns: int) -> int:
    """How many steps of ``step_ns`` cover ``[since, now]``; refuses a step that is not
    positive or that cuts the window into more than :data:`MAX_RATE_POINTS`."""
    if step_ns <= 0:
        raise OphionError("step must be longer than 0", hint="use a duration such as 15s or 1m")
    window_ns = max(to_ns(now) - to_ns(since), 0)
    buckets = max(1, -(-window_ns // step_ns))
    if buckets > MAX_RATE_POINTS:
        shortest_ms = -(-window_ns // (MAX_RATE_POINTS * 1_000_000))
        raise OphionError(
            f"a step of {_seconds(step_ns)} cuts the {_seconds(window_ns)} window into "
            f"{buckets} steps; at most {MAX_RATE_POINTS} are served",
            hint=f"use a step of at least {_seconds(shortest_ms * 1_000_000)}, or a shorter since",
        )
    return buckets


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.10g}s"  # 3600s, 3.6s, 0.25s: never an exponent


def _rate_points(
    steps: list[dict[str, int]], since: dt.datetime, now: dt.datetime, step_ns: int
) -> list[dict[str, Any]]:
    """Every step of the window, zero-filled: its start, requests per second and error share.

    A step's rate is over the part of it inside the window: only the last one can be shorter
    than ``step_ns``, when the window is not a whole number of steps.
    """
    start, end = to_ns(since), to_ns(now)
    counted = {s["step"]: (s["requests"], s["errors"]) for s in steps}
    points = []
    for i in range(rate_buckets(since, now, step_ns)):
        begins = start + i * step_ns
        seconds = max(min(begins + step_ns, end) - begins, 1) / 1e9
        requests, errors = counted.get(i, (0, 0))
        points.append(
            {
                "time": iso_ns(begins),
                "rate": requests / seconds,
                "error_rate": errors / requests if requests else 0.0,
            }
        )
    return points


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
    sort: str = "start"  # "start" (newest first) | "duration" (slowest first)


@dataclass
class LogSearch:
    """The filters of ``ophion logs``; also applied in Python to records that stream in."""

    since: dt.datetime
    service: str | None = None
    min_severity: int | None = None
    grep: str | None = None
    trace_id: str | None = None
    limit: int = 100

    def sql_filter(self, since: dt.datetime | None = None) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters; ``since`` narrows the window."""
        where = ["timestamp >= make_timestamp_ns(?::BIGINT)"]
        params: list[Any] = [_ts(since or self.since)]
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
