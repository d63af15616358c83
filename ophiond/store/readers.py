"""The queries running on the store's DuckDB instance, and the limits they run under.

Every query (``ophion sql`` and the API's own) shares the instance with the writer: one
``memory_limit`` and one temporary directory. DuckDB 2.0 has no hard per-query memory limit,
and when it finds no memory for the writer's INSERT, the ROLLBACK that follows can fail too,
which invalidates the whole database (measured on 2.0.1). So queries get a share of both
(docs/sql.md says what that guarantees):

- ``sql_max_memory``: each query's ``operator_memory_limit`` (its hash tables and sorts spill
  past it), and what all queries may hold of the memory that cannot move to disk (DuckDB's
  ``ALLOCATOR`` tag); a watchdog stops the query that took the most once they hold more.
- ``sql_max_spill``: the temporary directory's cap (``max_temp_directory_size``, set by
  :func:`partitions.connect`), less a room kept for the writer, which moves queries' memory to
  disk when it needs memory itself; the watchdog stops the queries that spilled once the
  directory passes their share.
- :meth:`Readers.stop`: the writer stops every query when an insert finds no memory anyway,
  then tries again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from ophiond.store.partitions import PartitionSet

log = logging.getLogger(__name__)

# How often the watchdog measures queries' memory and the temporary directory while queries
# run (about 0.2 ms of CPU each time). A query spills a few hundred MB/s at most on this
# hardware, so it passes its share by some MB before it is stopped: the writer's room in
# the directory absorbs that.
_WATCH_INTERVAL_S = 0.025


@dataclass(frozen=True)
class ReaderLimits:
    """What every query on one store may use."""

    # Each query's operator_memory_limit, and what all queries may hold of the memory that
    # cannot be moved to disk.
    query_memory: int | None = None
    max_spill: int | None = None  # the temporary directory's cap (max_temp_directory_size)
    writer_reserve: int = 0  # the part of max_spill that queries may not fill
    temp_dir: Path | None = None

    @property
    def query_spill(self) -> int | None:
        """What queries may spill, all together, before the watchdog stops them."""
        if self.max_spill is None:
            return None
        return max(self.max_spill - self.writer_reserve, 0)


def writer_reserve(memory_limit: int, max_spill: int) -> int:
    """Temporary disk kept for the writer: room to move all of DuckDB's memory to disk, or
    half the budget when that is less."""
    return min(memory_limit, max_spill // 2)


# How DuckDB words a failure to get memory where it does not raise OutOfMemoryException (a
# COMMIT's "TransactionContext Error: Failed to commit: failed to pin block ...").
_NO_MEMORY_RE = re.compile(
    r"failed to (pin|allocate|offload)|could not allocate|Out of Memory", re.IGNORECASE
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether a DuckDB error means it found no memory (or no temporary disk to free some)."""
    import duckdb

    if isinstance(error, duckdb.OutOfMemoryException):
        return True
    return isinstance(error, duckdb.TransactionException) and bool(_NO_MEMORY_RE.search(str(error)))


def directory_size(directory: str | os.PathLike[str]) -> int:
    """Bytes in the files directly in ``directory`` (0 when it does not exist)."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    total += entry.stat().st_size
                except FileNotFoundError:
                    pass  # (a file deleted meanwhile)
    except FileNotFoundError:
        return 0
    return total


def human_size(amount: int) -> str:
    """Bytes as the settings write them: 64 MB, 1.5 GB."""
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if amount >= scale:
            return f"{amount / scale:.3g} {unit}"
    return f"{amount} bytes"


@dataclass
class Reader:
    """One running query; ``stopped`` says why it was interrupted (``spill``, ``ingest``)."""

    cursor: duckdb.DuckDBPyConnection
    connection_id: int | None = None
    stopped: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Readers:
    """The queries running on one store, and the watchdog that keeps them within their share
    of memory and temporary disk."""

    def __init__(
        self, limits: ReaderLimits, monitor: duckdb.DuckDBPyConnection | None = None
    ) -> None:
        self.limits = limits
        self._monitor = monitor  # the watchdog's own cursor, to ask DuckDB what queries hold
        self._cond = threading.Condition()
        self._running: list[Reader] = []
        self._watchdog: threading.Thread | None = None

    def track(self, cursor: duckdb.DuckDBPyConnection) -> Reader:
        """Apply the limits to a query's connection and count it as running."""
        reader = Reader(cursor)
        if self.limits.query_memory is not None:
            cursor.execute(f"SET operator_memory_limit = '{self.limits.query_memory}B'")
        if self._monitor is not None:
            row = cursor.execute("SELECT current_connection_id()").fetchone()
            reader.connection_id = int(row[0]) if row else None
        with self._cond:
            self._running.append(reader)
            if self._monitor is not None and self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="ophion-budget-watchdog", daemon=True
                )
                self._watchdog.start()
            self._cond.notify_all()
        return reader

    def untrack(self, reader: Reader) -> None:
        with self._cond:
            self._running.remove(reader)
        reader.done.set()

    def stop(self, reason: str = "ingest", wait_s: float = 5.0) -> int:
        """Interrupt every running query, waiting up to ``wait_s`` for them to let go of what
        they hold; return how many there were."""
        with self._cond:
            readers = list(self._running)
        return self._interrupt(readers, reason, wait_s)

    @staticmethod
    def _interrupt(readers: list[Reader], reason: str, wait_s: float) -> int:
        for reader in readers:
            reader.stopped = reason
            reader.cursor.interrupt()
        deadline = time.monotonic() + wait_s
        for reader in readers:
            reader.done.wait(max(deadline - time.monotonic(), 0.0))
        return len(readers)

    # -- the watchdog --------------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._running:
                    self._cond.wait()
                running = list(self._running)
            self._check_memory(running)
            self._check_spill(running)
            time.sleep(_WATCH_INTERVAL_S)

    def _check_memory(self, running: list[Reader]) -> None:
        """Stop the query that took the most memory once queries hold more than their share."""
        share = self.limits.query_memory
        if share is None:
            return
        held = self._held()
        if held is not None and held <= share:
            return
        per_query = self._per_query("system.total_memory_allocated")
        hog = max(running, key=lambda r: per_query.get(_id(r), 0))
        log.warning(
            "queries hold %s of memory, past the %s they may (sql_max_memory): stopping one",
            "all" if held is None else human_size(held),
            human_size(share),
        )
        self._interrupt([hog], "memory", 1.0)

    def _check_spill(self, running: list[Reader]) -> None:
        """Stop the queries that spilled once the temporary directory passes their share."""
        share = self.limits.query_spill
        if share is None:
            return
        spilled = self._spilled()
        if spilled <= share:
            return
        per_query = self._per_query("system.total_bytes_spilled")
        spillers = [r for r in running if per_query.get(_id(r), 1) > 0]
        log.warning(
            "queries spilled %s, past the %s they may (sql_max_spill): stopping %d",
            human_size(spilled),
            human_size(share),
            len(spillers),
        )
        self._interrupt(spillers, "spill", 1.0)

    def _held(self) -> int | None:
        """Memory DuckDB gives queries' own work (its ``ALLOCATOR`` tag: aggregate states,
        strings, what cannot be moved to disk; the writer's data is under other tags); None
        when DuckDB has too little memory left to say."""
        import duckdb

        assert self._monitor is not None
        try:
            row = self._monitor.execute(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                "WHERE tag = 'ALLOCATOR'"
            ).fetchone()
        except duckdb.Error:
            return None
        return int(row[0]) if row else 0

    def _spilled(self) -> int:
        """Bytes in the temporary directory (read from the file system: asking DuckDB needs
        memory, which is what may be missing)."""
        return directory_size(self.limits.temp_dir or ".")

    def _per_query(self, metric: str) -> dict[int, int]:
        """One of DuckDB's live counters by connection (empty when it cannot say)."""
        import duckdb

        assert self._monitor is not None
        try:
            rows = self._monitor.execute(
                "SELECT connection_id, metric_value::UBIGINT FROM duckdb_live_query_metrics() "
                "WHERE metric_name = ?",
                [metric],
            ).fetchall()
        except duckdb.Error:
            return {}
        return {int(connection): int(amount or 0) for connection, amount in rows}


def _id(reader: Reader) -> int:
    return -1 if reader.connection_id is None else reader.connection_id


_READERS: weakref.WeakKeyDictionary[PartitionSet, Readers] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def readers_of(partitions: PartitionSet) -> Readers:
    """The running queries of a store (without limits until :func:`limit_readers`)."""
    with _LOCK:
        readers = _READERS.get(partitions)
        if readers is None:
            readers = _READERS[partitions] = Readers(ReaderLimits())
        return readers


def limit_readers(partitions: PartitionSet, limits: ReaderLimits) -> Readers:
    """Run every query on ``partitions`` under ``limits`` from now on (called before the
    first query)."""
    with partitions.lock:
        watched = limits.query_spill is not None or limits.query_memory is not None
        monitor = partitions.con.cursor() if watched else None
    with _LOCK:
        readers = _READERS[partitions] = Readers(limits, monitor)
        return readers
