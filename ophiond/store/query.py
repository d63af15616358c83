"""Read-only SQL over the stable views, with a time limit, bounded resources and JSON-ready
results.

Every query runs on a DuckDB cursor of its own, interrupted after its time limit, under the
limits of :mod:`ophiond.store.readers` (its memory for sorts and hash tables, the temporary
disk queries may fill, and the writer's right to stop queries when it needs their memory).
User SQL (``ophion sql``) is checked by :mod:`ophiond.store.sqlpolicy` and takes one of a
bounded number of slots (:class:`QuerySlots`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import heapq
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ophiond.errors import QueryError, QueryNotRun, StoreError
from ophiond.store.readers import Reader, ReaderLimits, human_size, readers_of

if TYPE_CHECKING:
    import duckdb

    from ophiond.store.partitions import PartitionSet


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


class QuerySlots:
    """At most ``size`` user queries run at once, so that they cannot take every core (and
    every byte of memory) from ingest; a query waits for a free slot within its time limit."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    @contextmanager
    def hold(self, timeout_s: float) -> Iterator[None]:
        """Take a slot for the ``with`` block; refuse after ``timeout_s`` without one."""
        if not self._free.acquire(timeout=max(timeout_s, 0.0)):
            raise QueryNotRun(
                f"query not started: the {self.size} sql_max_concurrent slots were busy for "
                f"the whole {timeout_s:g}s",
                hint="try again when one of them has finished, or raise sql_max_concurrent",
            )
        try:
            yield
        finally:
            self._free.release()


def run_query(
    partitions: PartitionSet,
    sql: str,
    max_rows: int,
    timeout_s: float,
    slots: QuerySlots | None = None,
) -> QueryResult:
    """Run one read-only statement (:func:`sqlpolicy.check_read_only`) on its own cursor, in
    one of ``slots`` when given; interrupt it ``timeout_s`` after it arrived."""
    from ophiond.store.sqlpolicy import check_read_only

    check_read_only(sql)
    arrived = time.monotonic()
    with slots.hold(timeout_s) if slots is not None else nullcontext():
        waited = time.monotonic() - arrived
        description, rows = fetch_limited(
            partitions, sql, [], timeout_s, max_rows + 1, waited_s=waited
        )
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
    partitions: PartitionSet,
    sql: str,
    params: list[Any],
    timeout_s: float,
    max_rows: int | None,
    waited_s: float = 0.0,
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """Run a statement on a cursor of its own, interrupted ``timeout_s`` after it arrived
    (``waited_s`` ago); return its description and up to ``max_rows`` rows. DuckDB's errors
    become :class:`QueryError`."""
    if partitions.before_read is not None:
        partitions.before_read()
    generation_before = partitions.generation
    try:
        return _fetch(partitions, sql, params, timeout_s, max_rows, waited_s)
    except _CatalogError:
        if partitions.generation == generation_before:
            raise
    # Retention took a partition out of the views while the statement was planned on them:
    # once more, on the views as they are now.
    return _fetch(partitions, sql, params, timeout_s, max_rows, waited_s)


def _fetch(
    partitions: PartitionSet,
    sql: str,
    params: list[Any],
    timeout_s: float,
    max_rows: int | None,
    waited_s: float,
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    import duckdb

    with partitions.lock:
        cursor = partitions.con.cursor()
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        cursor.interrupt()

    readers = readers_of(partitions)
    timer = _WATCHDOG.call_after(max(timeout_s - waited_s, 0.0), interrupt)
    reader: Reader | None = None
    try:
        reader = readers.track(cursor)
        cursor.execute(sql, params)
        description = list(cursor.description or [])
        rows = cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows)
    except duckdb.Error as e:
        stopped = reader.stopped if reader is not None else None
        if stopped == "ingest":
            raise QueryNotRun(
                "query stopped: ophiond needed the memory it held to store incoming telemetry",
                hint="run it again; narrow it (time window, filters, columns) or raise "
                "memory_limit",
            ) from None
        if stopped == "spill":
            raise _spilled_too_much(readers.limits) from None
        if stopped == "memory":
            raise _held_too_much(readers.limits) from None
        if timed_out.is_set():
            raise QueryError(
                f"query interrupted after {timeout_s:g}s (sql_timeout)",
                hint="narrow the time window (--since) or the filters, or raise sql_timeout",
            ) from None
        if isinstance(e, duckdb.OutOfMemoryException):
            if "max_temp_directory_size" in str(e):
                raise _spilled_too_much(readers.limits) from None
            raise _out_of_memory(cursor) from None
        error = _sql_error(e)
        if isinstance(e, duckdb.CatalogException):
            raise _CatalogError(error.message, hint=error.hint) from None
        raise error from None
    finally:
        _WATCHDOG.cancel(timer)
        cursor.close()  # (what the query held is given back here)
        if reader is not None:
            readers.untrack(reader)
    return description, rows


def _spilled_too_much(limits: ReaderLimits) -> QueryError:
    """The queries filled their share of ``sql_max_spill``; this one was among them."""
    share = f"the {human_size(limits.query_spill)} " if limits.query_spill is not None else ""
    return QueryError(
        f"query stopped: it needed more temporary disk than {share}queries may spill "
        "(sql_max_spill)",
        hint="narrow the time window or the filters, aggregate before joining, or raise "
        "sql_max_spill",
    )


def _held_too_much(limits: ReaderLimits) -> QueryError:
    """The queries held more memory than their share of ``memory_limit``; this one most."""
    share = f"the {human_size(limits.query_memory)} " if limits.query_memory is not None else ""
    return QueryError(
        f"query stopped: it needed more memory than {share}queries may hold (sql_max_memory)",
        hint="the rest of memory_limit is kept for storing telemetry; narrow the time window "
        "or the filters, or raise memory_limit",
    )


def _out_of_memory(cursor: duckdb.DuckDBPyConnection) -> QueryError:
    """The query needed more memory than DuckDB's ``memory_limit`` had for it."""
    import duckdb

    try:
        row = cursor.execute("SELECT current_setting('memory_limit')").fetchone()
        amount = f" ({row[0]})" if row else ""
    except duckdb.Error:
        amount = ""
    return QueryError(
        f"query stopped: it needed more memory than memory_limit{amount} allows",
        hint="narrow the time window or the filters, select fewer columns, or raise memory_limit",
    )


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


def open_read_only(data_dir: Any, memory_limit: int, max_spill: int | None = None) -> PartitionSet:
    """Attach the partition files read-only, for use while the daemon is not running."""
    from ophiond.store.partitions import PartitionSet, connect

    partitions = PartitionSet(
        connect(memory_limit, data_dir, max_spill=max_spill), data_dir, read_only=True
    )
    try:
        partitions.open()
    except StoreError:
        partitions.con.close()
        raise
    return partitions
