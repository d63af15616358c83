"""Inserting journal records into DuckDB, and finding the requests DuckDB refuses.

The writer hands each journal segment's records to :meth:`Inserter.store` (its flusher, and
its replay at start): one transaction inserts every table's rows (spans sorted by trace id,
log records by time, tagged with the flush where :mod:`tracefilter` says so), the flush's
trace-id filter, and the segment they complete (``journal_applied``), so that after a crash
the journal is replayed from the first segment DuckDB does not have.

No record can stop storage: when that insert fails, it is tried again in slices of 4 MB (a
DuckDB at its memory limit cannot compress one large INSERT of large values); if it still
fails, the request(s) that make it fail are looked for (halving the chunk in trial
transactions that are rolled back), moved to the dead-letter directory with DuckDB's reason
(:mod:`deadletter`), and the rest stored. DuckDB can report a COMMIT as failed after it took
effect: the segment is then found in ``journal_applied`` and not stored twice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ophiond.errors import StoreError
from ophiond.store import tracefilter
from ophiond.store.readers import is_out_of_memory
from ophiond.store.schema import FLUSH_TAGGED

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ophiond.model import Recorder
    from ophiond.store.deadletter import DeadLetters
    from ophiond.store.journal import JournalRecord
    from ophiond.store.partitions import PartitionSet

log = logging.getLogger(__name__)

# A request that makes a flush fail is tried alone twice, this far apart, before it is moved
# to the dead letters: a squeeze on memory that passes must not condemn a good request.
_CONFIRM_PAUSE_S = 0.2
# After a failed flush, each table goes in in slices of at most this many bytes (Arrow's
# count). DuckDB at its 64 MB memory limit cannot compress one INSERT of more than about 16 MB
# of values of several kB each (300 spans with 60 kB attributes: Out of Memory); in slices it
# can. Flushes go in whole otherwise: each INSERT ends a row group, and small ones cost disk.
_SLICE_BYTES = 4 << 20
# The order rows are inserted in at a flush. A trace's spans sit together, so a trace lookup
# skips most row groups by their min/max trace id; log records go in time order, so a search
# of the newest ones skips the older row groups.
_SORT_KEYS = {
    "spans": "trace_id",
    "span_events": "trace_id",
    "span_links": "trace_id",
    "logs": "timestamp",
}


def by_signal(records: list[JournalRecord]) -> dict[str, int]:
    """How many records ``records`` hold, by signal."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.signal] = counts.get(record.signal, 0) + record.records
    return counts


class Inserter:
    """Stores journal records in the current partition, through the writer's cursor (used by
    one thread at a time: the start's replay, then the flusher)."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        partitions: PartitionSet,
        dead_letters: DeadLetters,
    ) -> None:
        self._cursor = cursor
        self.partitions = partitions
        self.dead_letters = dead_letters
        # Set when DuckDB invalidated the database: only a restart helps (see _note_fatal).
        self.fatal: str | None = None
        # Called when DuckDB has no memory for an insert: stops the queries holding it (ingest
        # goes first) and returns how many there were (query.stop_readers).
        self.make_room: Callable[[], int] | None = None
        # The audit log: requests dead-lettered.
        self.audit: Recorder | None = None

    def store(self, records: list[JournalRecord], segment: int) -> dict[str, int]:
        """Insert ``records`` and mark ``segment`` applied, in one transaction. If DuckDB
        refuses, find the records it refuses, move them to the dead letters and store the rest;
        return the records moved, by signal. Raise :class:`StoreError` when the failure is not
        any record's (the disk, or it did not happen again): the flush is then retried."""
        try:
            self.insert([r.tables for r in records], segment)
            return {}
        except StoreError as e:
            if e.transient or not records:
                raise
            failure = e
        try:
            self.insert([r.tables for r in records], segment, _SLICE_BYTES)
            log.warning("%s; stored it in smaller inserts instead", failure.message)
            return {}
        except StoreError as e:
            if e.transient:
                raise
        log.error("%s; looking for the request(s) that cause it", failure.message)
        if self.make_room is not None:  # (the search must not blame a record for their memory)
            self.make_room()
        refused = self._refused(records)
        if not refused:
            raise failure
        dead: list[JournalRecord] = []
        written: list[JournalRecord] = []
        for index, reason in refused:
            record = records[index]
            if self.dead_letters.put(segment, record, reason):
                written.append(record)
            dead.append(record)
            if self.audit is not None:
                self.audit.record(
                    "ophiond",
                    "records.dead_letter",
                    f"segment {segment:012d} request {record.sequence}",
                    signal=record.signal,
                    records=record.records,
                    reason=reason,
                )
            log.error(
                "journal segment %012d, request %d (%d %s records) cannot be stored and was "
                "moved to %s: %s",
                segment,
                record.sequence,
                record.records,
                record.signal,
                self.dead_letters.directory,
                reason,
            )
        doomed = {index for index, _ in refused}
        keep = [r for i, r in enumerate(records) if i not in doomed]
        try:
            self.insert([r.tables for r in keep], segment, _SLICE_BYTES)
        except StoreError:
            # Retried later from the start, when the records may all go in after all: a dead
            # letter must never stand for a record that is also stored.
            for record in written:
                self.dead_letters.withdraw(segment, record)
            raise
        return by_signal(dead)

    def _refused(self, records: list[JournalRecord]) -> list[tuple[int, str]]:
        """The records DuckDB refuses on their own, with its reason: halves of ``records`` are
        tried in transactions that are rolled back, and a record that fails alone is tried
        once more after a pause."""
        found: list[tuple[int, str]] = []
        pending = [list(range(len(records)))]
        while pending:
            indexes = pending.pop()
            error = self._trial([records[i] for i in indexes])
            if error is None:
                continue
            if len(indexes) > 1:
                middle = len(indexes) // 2
                pending += [indexes[middle:], indexes[:middle]]
                continue
            time.sleep(_CONFIRM_PAUSE_S)
            if self._trial([records[indexes[0]]]) is not None:
                found.append((indexes[0], error))
        return sorted(found)

    def _trial(self, records: list[JournalRecord]) -> str | None:
        """Insert ``records`` (in slices) and roll back: DuckDB's error, or None when it took
        them. Raise a transient :class:`StoreError` when the error is not the records' (the
        disk, or a database DuckDB invalidated): the search stops there."""
        import duckdb
        import pyarrow as pa

        cur = self._cursor
        try:
            cur.execute("BEGIN")
            self._insert_rows([r.tables for r in records], 0, _SLICE_BYTES)
        except (duckdb.IOException, duckdb.FatalException) as e:
            self._note_fatal(e)
            raise StoreError(f"cannot write to the store: {e}", transient=True) from e
        except (duckdb.Error, pa.ArrowException) as e:
            return str(e).splitlines()[0]
        finally:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the failed statement may already have ended the transaction
        return None

    def insert(
        self,
        batches: list[dict[str, pa.Table]],
        segment: int,
        slice_bytes: int | None = None,
        make_room: bool = True,
    ) -> None:
        """One transaction: every table's rows (tagged with the flush, which is the journal
        segment, where tracefilter.py says so), the flush's trace-id filter, and the journal
        segment they complete; each table in one INSERT, or in slices of ``slice_bytes``.
        When DuckDB has no memory for it, the queries holding memory are stopped
        (:attr:`make_room`) and it is tried once more at once; a memory error with no query
        to blame is the records' (not transient)."""
        import duckdb
        import pyarrow as pa

        cur = self._cursor
        alias = self.partitions.current.alias
        # A ROLLBACK that found no memory left the last transaction open and aborted, and every
        # statement fails until one succeeds.
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        if self._committed_anyway(alias, segment):
            return
        committing = False
        try:
            cur.execute("BEGIN")
            trace_ids = self._insert_rows(batches, segment, slice_bytes)
            if trace_ids:
                cur.execute(
                    f"INSERT INTO {alias}.main.trace_filters VALUES (?, ?::BLOB::BIT)",
                    [segment, tracefilter.build(trace_ids)],
                )
            cur.execute(f"UPDATE {alias}.main.journal_applied SET segment = ?", [segment])
            committing = True
            cur.execute("COMMIT")
        except (duckdb.Error, pa.ArrowException) as e:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the failed statement may already have ended the transaction
            if committing and self._committed_anyway(alias, segment):
                return
            if is_out_of_memory(e) and make_room and self.make_room and self.make_room():
                log.warning("no memory for a flush: stopped the queries holding it; once more")
                self.insert(batches, segment, slice_bytes, make_room=False)
                return
            self._note_fatal(e)
            raise StoreError(
                f"cannot write to {self.partitions.current.path.name}: {e}",
                # The disk (full, failing) or a database DuckDB invalidated, rather than a
                # record: retry, never dead-letter. (Memory queries held was made room for
                # above; what is left is the records'.)
                transient=isinstance(e, duckdb.IOException | duckdb.FatalException),
            ) from e

    def _note_fatal(self, error: Exception) -> None:
        """DuckDB invalidated the database (it says so with a FatalException): nothing works
        on this instance again; :attr:`fatal` tells the daemon to stop so that it is
        restarted (the journal keeps every acknowledged record meanwhile)."""
        import duckdb

        if isinstance(error, duckdb.FatalException) and self.fatal is None:
            self.fatal = str(error).splitlines()[0]
            log.critical("DuckDB can no longer use the store until ophiond restarts: %s", error)

    def _committed_anyway(self, alias: str, segment: int) -> bool:
        """Whether partition ``alias`` already records ``segment`` as stored: DuckDB can report
        a COMMIT as failed after it took effect (it found no memory for what follows it), and
        storing the segment again would store it twice. False when DuckDB cannot say now."""
        import duckdb

        if not segment:
            return False
        try:
            # (fetchall: a result left unread on the writer's cursor keeps a transaction open,
            # and checkpoints are refused while it is)
            [(stored,)] = self._cursor.execute(
                f"SELECT max(segment) FROM {alias}.main.journal_applied"
            ).fetchall()
        except duckdb.Error:
            return False
        if stored is None or stored < segment:
            return False
        log.warning("journal segment %d was stored by a COMMIT that reported failure", segment)
        return True

    def _insert_rows(
        self, batches: list[dict[str, pa.Table]], segment: int, slice_bytes: int | None = None
    ) -> set[str]:
        """Insert every table's rows in the open transaction (in slices of ``slice_bytes``
        when given); return the trace ids."""
        import duckdb
        import pyarrow as pa
        import pyarrow.compute as pc

        by_table: dict[str, list[pa.Table]] = {}
        for batch in batches:
            for name, table in batch.items():
                if table.num_rows:
                    by_table.setdefault(name, []).append(table)
        cur = self._cursor
        alias = self.partitions.current.alias
        trace_ids: set[str] = set()
        for name, parts in by_table.items():
            combined = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
            if name in _SORT_KEYS:  # (Arrow sorts for less CPU than an ORDER BY in DuckDB)
                combined = combined.sort_by(_SORT_KEYS[name])
            # One statement per table: DuckDB ends a row group where an INSERT ends (in
            # slices of 16k rows, each flush left small row groups: 10 bytes more per span).
            tag = ""
            if name in FLUSH_TAGGED:
                tag = ", ?::UBIGINT AS flush"
                trace_ids.update(pc.unique(combined["trace_id"]).to_pylist())
            rows = combined.num_rows
            step = rows
            if slice_bytes and combined.nbytes > slice_bytes:
                step = max(1, rows * slice_bytes // combined.nbytes)
            for offset in range(0, rows, step):
                cur.register("_ophion_batch", combined.slice(offset, step))
                try:
                    cur.execute(
                        f"INSERT INTO {alias}.main.{name} BY NAME SELECT *{tag} FROM _ophion_batch",
                        [segment] if tag else [],
                    )
                finally:
                    # (in a transaction the failed INSERT aborted, this fails too: the error
                    # that matters is the INSERT's, and the rollback drops the registration)
                    with contextlib.suppress(duckdb.Error):
                        cur.unregister("_ophion_batch")
        return trace_ids
