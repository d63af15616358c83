"""Read-only SQL over the stable views, with a time limit and JSON-ready results."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import heapq
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ophiond.errors import OphionError, StoreError

if TYPE_CHECKING:
    from ophiond.store.partitions import PartitionSet


class QueryError(OphionError):
    """The user's SQL was refused or failed: a usage problem, not a daemon fault."""


class _CatalogError(QueryError):
    """A table or schema the statement names does not exist (or no longer does)."""


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": self.rows,
            "truncated": self.truncated,
        }


_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN of one): the store is written by ophiond only."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise _sql_error(e) from None
    if len(statements) != 1:
        raise QueryError(
            f"expected one statement, got {len(statements)}", hint="run statements one at a time"
        )
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs what it explains: check the explained statement too.
        inner = _EXPLAIN_RE.sub("", statements[0].query, count=1)
        inner_kinds = [s.type for s in duckdb.extract_statements(inner)]
        if inner_kinds != [duckdb.StatementType.SELECT]:
            raise QueryError(
                "only SELECT queries are allowed, also under EXPLAIN",
                hint="the store is read-only from ophion sql",
            )
        return
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(
            f"only SELECT queries are allowed, not {kind.name}",
            hint="the store is read-only from ophion sql; views: spans, span_events, span_links, "
            "logs, metric_points",
        )


def run_query(partitions: PartitionSet, sql: str, max_rows: int, timeout_s: float) -> QueryResult:
    """Run one read-only statement on its own cursor; interrupt it after ``timeout_s``."""

    check_read_only(sql)
    description, rows = fetch_limited(partitions, sql, [], timeout_s, max_rows + 1)
    types = [str(d[1]) for d in description]
    # JSON columns (attributes, bodies of structured logs) come back as text: give them as JSON.
    is_json = [t == "JSON" for t in types]
    return QueryResult(
        columns=[d[0] for d in description],
        types=types,
        rows=[
            [_parse_json(v) if j else to_json_value(v) for v, j in zip(row, is_json, strict=True)]
            for row in rows[:max_rows]
        ],
        truncated=len(rows) > max_rows,
    )


def fetch_limited(
    partitions: PartitionSet, sql: str, params: list[Any], timeout_s: float, max_rows: int | None
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """Run a statement on a cursor of its own, interrupted after ``timeout_s``; return its
    description and up to ``max_rows`` rows. DuckDB's errors become :class:`QueryError`."""
    if partitions.before_read is not None:
        partitions.before_read()
    generation_before = partitions.generation
    try:
        return _fetch(partitions, sql, params, timeout_s, max_rows)
    except _CatalogError:
        if partitions.generation == generation_before:
            raise
    # Retention took a partition out of the views while the statement was planned on them:
    # once more, on the views as they are now.
    return _fetch(partitions, sql, params, timeout_s, max_rows)


def _fetch(
    partitions: PartitionSet, sql: str, params: list[Any], timeout_s: float, max_rows: int | None
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    import duckdb

    with partitions.lock:
        cursor = partitions.con.cursor()
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        cursor.interrupt()

    timer = _WATCHDOG.call_after(timeout_s, interrupt)
    try:
        cursor.execute(sql, params)
        description = list(cursor.description or [])
        rows = cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows)
    except duckdb.Error as e:
        if timed_out.is_set():
            raise QueryError(
                f"query interrupted after {timeout_s:g}s (sql_timeout)",
                hint="narrow the time window (--since) or the filters, or raise sql_timeout",
            ) from None
        error = _sql_error(e)
        if isinstance(e, duckdb.CatalogException):
            raise _CatalogError(error.message, hint=error.hint) from None
        raise error from None
    finally:
        _WATCHDOG.cancel(timer)
        cursor.close()
    return description, rows


class _Watchdog:
    """One thread that interrupts queries past their time limit. (A ``threading.Timer`` per
    query starts a thread per query, which under load cost up to 4 ms before the query ran.)"""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def call_after(self, seconds: float, callback: Callable[[], None]) -> int:
        """Call ``callback`` (on the watchdog's thread) after ``seconds`` unless cancelled."""
        handle = next(self._ids)
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + seconds, handle, callback))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ophion-query-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._due = [d for d in self._due if d[1] != handle]
            heapq.heapify(self._due)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, callback = heapq.heappop(self._due)
            callback()


_WATCHDOG = _Watchdog()


def _sql_error(error: Exception) -> QueryError:
    """DuckDB's message as one line; its ``LINE 1: ... ^`` pointer becomes the hint."""
    first, _, rest = str(error).strip().partition("\n")
    context = "\n".join(line for line in rest.splitlines() if line.strip())
    return QueryError(f"SQL error: {first}", hint=context or None)


def _parse_json(value: Any) -> Any:
    if not isinstance(value, str):
        return to_json_value(value)
    try:
        return json.loads(value)
    except ValueError:
        return value


def to_json_value(value: Any) -> Any:
    """A DuckDB result value as JSON: times ISO 8601, blobs base64, NaN as a string."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return str(value)


def open_read_only(data_dir: Any, memory_limit: int) -> PartitionSet:
    """Attach the partition files read-only, for use while the daemon is not running."""
    from ophiond.store.partitions import PartitionSet, connect

    partitions = PartitionSet(connect(memory_limit, data_dir), data_dir, read_only=True)
    try:
        partitions.open()
    except StoreError:
        partitions.con.close()
        raise
    return partitions
