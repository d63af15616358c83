"""The single writer: a bounded queue of decoded batches, the ingest journal, and DuckDB.

Receivers call :meth:`Writer.submit` and wait on the returned :class:`PendingWrite`; they answer
the client with success only once it reports the batch durable. Two threads do the work:

- the *journal thread* takes every waiting batch at once, appends them to the ingest journal
  (:mod:`ophiond.store.journal`) with one ``fdatasync`` (group commit) and acknowledges them;
- the *flusher thread* inserts what the journal holds into DuckDB in large chunks, one per
  journal segment, read back from the segment's file, so that waiting records take no memory
  (DuckDB needs a third of the CPU per record, and stores them more compactly, than with one
  request per commit), spans sorted by trace id and log records by time. It flushes
  when enough records wait, when the oldest has waited ``flush_interval``, and whenever a
  reader asks (:meth:`Writer.sync`, called before every query), so readers see every
  acknowledged record. Between flushes it runs housekeeping (roll-over, retention).

The bound applies to records accepted and not yet in DuckDB (queued or journaled); when it is
reached :class:`QueueFull` tells the receiver to answer with a retryable error. On start the
journal's records that DuckDB lacks are replayed (:meth:`Writer.recover`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import operator
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ophiond.errors import OphionError, StoreError
from ophiond.store import tracefilter
from ophiond.store.journal import Journal, encode_record, encode_tables, read_segment
from ophiond.store.partitions import ROW_GROUP_SIZE
from ophiond.store.schema import FLUSH_TAGGED

if TYPE_CHECKING:
    import pyarrow as pa

    from ophiond.otlp.decode import DecodedBatch
    from ophiond.store.partitions import PartitionSet
    from ophiond.telemetry import Telemetry

log = logging.getLogger(__name__)

# Records per DuckDB insert, at most: DuckDB's CPU per record is a third of what 1,000-record
# inserts cost from about 50,000 on, and a flush of a little less than two row groups
# (partitions.ROW_GROUP_SIZE) leaves row groups that are full or nearly (see
# _close_before_overflow). Smaller flushes with a queue of 100,000 saved 14 MB but refused
# requests three to seven times as often under full load (docs/performance.md).
FLUSH_RECORDS = 2 * ROW_GROUP_SIZE
# Smallest size (Arrow bytes in memory) that makes a flush due, whatever the disk budget.
FLUSH_MIN_BYTES = 1 << 20
# Longest an acknowledged record waits for its flush when nobody reads (bounds replay time).
FLUSH_INTERVAL_S = 5.0
# The order rows are inserted in at a flush. A trace's spans sit together, so a trace lookup
# skips most row groups by their min/max trace id; log records go in time order, so a search
# of the newest ones skips the older row groups.
_SORT_KEYS = {
    "spans": "trace_id",
    "span_events": "trace_id",
    "span_links": "trace_id",
    "logs": "timestamp",
}


class QueueFull(OphionError):
    """The write queue has no room: the client should retry later."""


class WriterStopped(OphionError):
    """The daemon is shutting down and takes no more writes."""


class PendingWrite:
    """A batch on its way to disk; :meth:`wait` returns once it is durable or failed."""

    __slots__ = ("batch", "records", "_done", "error")

    def __init__(self, batch: DecodedBatch) -> None:
        self.batch = batch
        self.records = max(batch.accepted, 1)
        self._done = threading.Event()
        self.error: StoreError | None = None

    def finish(self, error: StoreError | None = None) -> None:
        if self._done.is_set():  # answered already (a failing writer fails everything it holds)
            return
        self.error = error
        self._done.set()

    def wait(self) -> None:
        """Block until durable; raise the :class:`StoreError` when it could not be written."""
        self._done.wait()
        if self.error is not None:
            raise self.error


class _Chunk:
    """The records of one journal segment: what one flush reads back and inserts into DuckDB."""

    __slots__ = ("segment", "batches", "records", "size", "since", "last", "closed")

    def __init__(self, segment: int) -> None:
        self.segment = segment
        self.batches = 0  # journal records (one per accepted request)
        self.records = 0
        self.size = 0  # bytes of its records in the journal, about what they hold in memory
        self.since = time.monotonic()
        self.last = 0  # the writer's count of journaled batches when the last one came in
        self.closed = False  # its segment is complete: no more appends go to it

    def add(self, records: int, size: int, sequence: int) -> None:
        self.batches += 1
        self.records += records
        self.size += size
        self.last = sequence


class Writer:
    """Owns all writes to the store; runs housekeeping (roll-over, retention) between flushes."""

    def __init__(
        self,
        partitions: PartitionSet,
        telemetry: Telemetry,
        capacity: int,
        disk_budget: int,
        max_age_s: float,
        housekeeping_interval: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        flush_records: int = FLUSH_RECORDS,
        flush_interval: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.partitions = partitions
        self.telemetry = telemetry
        self.capacity = capacity
        self.disk_budget = disk_budget
        self.max_age_s = max_age_s
        self.housekeeping_interval = housekeeping_interval
        self.clock = clock
        # Half the bound, so that a flush can run while as many records arrive.
        self.flush_records = max(1, min(flush_records, capacity // 2))
        # And at most a 64th of the disk budget in memory, so that one flush never writes more
        # than a partition's share of a small budget (roll-over and retention work per flush).
        self.flush_bytes = max(FLUSH_MIN_BYTES, disk_budget // 64)
        self.flush_interval = flush_interval
        self.journal = Journal(partitions.data_dir / "journal")
        # Called with each acknowledged batch (the live log feed listens here).
        self.on_commit: Callable[[DecodedBatch], None] | None = None
        self._cond = threading.Condition()
        self._journal_lock = threading.Lock()  # appends vs. the flusher's rotation
        self._queue: deque[PendingWrite] = deque()
        self._in_flight: list[PendingWrite] = []
        # Records accepted and not yet in DuckDB (queued, journaled or being flushed).
        self._depth = 0
        # Journaled records by segment, oldest first; only the last one may still be open.
        self._chunks: deque[_Chunk] = deque()
        # Batches journaled, batches in DuckDB, the count a reader waits for; failed flushes.
        self._journaled = 0
        self._flushed = 0
        self._wanted = 0
        self._flush_failures = 0
        self._applied_segment = 0
        self._stopping = False
        self._journal_done = False
        self._thread = threading.Thread(
            target=self._guarded, args=(self._journal_loop,), name="ophion-writer", daemon=True
        )
        self._flusher = threading.Thread(
            target=self._guarded, args=(self._flush_loop,), name="ophion-flusher", daemon=True
        )
        self._cursor = partitions.con.cursor()
        self.last_progress = time.monotonic()

    # -- the receivers' side ------------------------------------------------------------------

    def submit(self, batch: DecodedBatch) -> PendingWrite:
        """Queue a batch; raise :class:`QueueFull` when it does not fit (unless nothing waits)."""
        pending = PendingWrite(batch)
        with self._cond:
            if self._stopping:
                raise WriterStopped("ophiond is shutting down")
            if self._depth and self._depth + pending.records > self.capacity:
                raise QueueFull(
                    f"write queue full ({self._depth} of {self.capacity} records waiting)"
                )
            self._depth += pending.records
            self._queue.append(pending)
            self._cond.notify_all()
        return pending

    @property
    def depth(self) -> int:
        """Records accepted and not yet in DuckDB."""
        return self._depth

    # -- the readers' side --------------------------------------------------------------------

    def sync(self, timeout: float = 30.0) -> None:
        """Return once every record acknowledged so far is in DuckDB (or a flush failed, or
        ``timeout`` passed: readers then see what is there)."""
        with self._cond:
            target = self._journaled
            if self._flushed >= target or not self._flusher.is_alive():
                return
            failures = self._flush_failures
            self._wanted = max(self._wanted, target)
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._flushed >= target or self._flush_failures > failures, timeout
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def recover(self) -> int:
        """Store the journal's records that DuckDB does not have; open the journal for appends.

        Returns how many records were replayed. Called once, before :meth:`start`.
        """
        applied = self.partitions.journal_position()
        replayed = 0
        for segment, entries in itertools.groupby(
            self.journal.replay(after=applied), key=operator.itemgetter(0)
        ):
            records = [record for _, record in entries]
            self._insert([r.tables for r in records], segment)  # one segment, one transaction
            replayed += sum(r.records for r in records)
        last = max([applied, *self.journal.segments()])
        self.journal.open(after=last)
        self.journal.discard_through(last)
        self._applied_segment = last
        if replayed:
            log.info("stored %d records from the ingest journal (after an unclean stop)", replayed)
        return replayed

    def start(self) -> None:
        if not self.journal.segment:
            self.recover()
        self._thread.start()
        self._flusher.start()

    def stop(self) -> None:
        """Refuse new batches, journal and flush every accepted one, then return."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        with self._cond:
            self._journal_done = True
            self._cond.notify_all()
        if self._flusher.is_alive():
            self._flusher.join()
        self.journal.close()

    def is_healthy(self, stall_after: float = 60.0) -> bool:
        """False when a writer thread died or made no progress with work waiting."""
        if not self._thread.is_alive() or not self._flusher.is_alive():
            return False
        return not (self._depth and time.monotonic() - self.last_progress > stall_after)

    # -- the threads --------------------------------------------------------------------------

    def _guarded(self, loop: Callable[[], None]) -> None:
        """Run a loop; if it ever dies, fail what is waiting instead of leaving it hanging."""
        try:
            loop()
        except BaseException:
            log.critical("the writer failed; refusing writes from now on", exc_info=True)
            with self._cond:
                self._stopping = True
                self._journal_done = True
                orphans = list(self._queue) + self._in_flight
                self._queue.clear()
                self._in_flight = []
                self._flush_failures += 1
                self._cond.notify_all()
            self._finish(orphans, StoreError("the writer failed; see the daemon's log"))

    def _journal_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                group = list(self._queue)
                self._queue.clear()
                self._in_flight = group
                if not group:  # stopping, and everything is journaled
                    return
            self._journal_group(group)

    def _journal_group(self, group: list[PendingWrite]) -> None:
        frames = [
            encode_record(
                p.batch.signal.value,
                p.batch.accepted,
                p.batch.streams or encode_tables(p.batch.tables),
            )
            for p in group
        ]
        with self._journal_lock:
            self._close_before_overflow(sum(p.records for p in group))
            try:
                self.journal.append(frames)
            except StoreError as e:
                log.error("%s", e.message)
                with self._cond:
                    self._in_flight = []
                self._finish(group, e)
                return
            with self._cond:
                last = self._chunks[-1] if self._chunks else None
                if last is None or last.closed or last.segment != self.journal.segment:
                    if last is not None:
                        last.closed = True  # its segment ended (after a failed rotation)
                    self._chunks.append(_Chunk(self.journal.segment))
                chunk = self._chunks[-1]
                for p, frame in zip(group, frames, strict=True):
                    self._journaled += 1
                    # (the IPC bytes: what the tables hold, without asking Arrow to add it up)
                    size = sum(len(part) for part in frame)
                    chunk.add(p.records, size, self._journaled)
                full = chunk.records >= self.flush_records or chunk.size >= self.flush_bytes
            if full:  # the next records go to a new segment: this one is a flush's worth
                try:
                    self._close_chunk(chunk)
                except (StoreError, OSError) as e:
                    log.error("%s; the segment grows until a new one can be made", e)
            with self._cond:
                self._cond.notify_all()
        self.last_progress = time.monotonic()
        self._finish(group, None, release=False)
        with self._cond:  # only now: until answered, a failing writer must fail them
            self._in_flight = []

    def _close_before_overflow(self, incoming: int) -> None:
        """End the open chunk if ``incoming`` records would take it past a flush's worth: a
        flush of a little less than whole row groups leaves one large partial row group per
        table, while a little more leaves a small one, and DuckDB's checkpoints rewrite runs
        of small row groups (docs/performance.md). Journal lock held."""
        with self._cond:
            chunk = self._chunks[-1] if self._chunks else None
            if (
                chunk is None
                or chunk.closed
                or chunk.segment != self.journal.segment
                or not chunk.records
                or chunk.records + incoming <= self.flush_records
            ):
                return
        try:
            self._close_chunk(chunk)
        except (StoreError, OSError) as e:
            log.error("%s; the segment grows until a new one can be made", e)

    def _close_chunk(self, chunk: _Chunk) -> None:
        """Start a new journal segment, so that ``chunk``'s is complete (journal lock held)."""
        self.journal.rotate()
        with self._cond:
            chunk.closed = True

    def _flush_loop(self) -> None:
        next_housekeeping = time.monotonic()
        retry_at = 0.0
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    final = self._journal_done
                    oldest = self._chunks[0] if self._chunks else None
                    due = (
                        oldest is not None
                        and now >= retry_at
                        and (
                            oldest.closed
                            or final
                            or self._wanted > self._flushed
                            or now - oldest.since >= self.flush_interval
                        )
                    )
                    housekeeping_due = not final and now >= next_housekeeping
                    if due or (final and oldest is None) or housekeeping_due:
                        break
                    wake = [] if final else [next_housekeeping]
                    if oldest is not None:
                        wake.append(max(retry_at, oldest.since + self.flush_interval))
                    self._cond.wait(max(0.0, min(wake) - now) if wake else None)
            if due:
                if self._flush():
                    retry_at = 0.0
                elif final:
                    log.error("records left in the ingest journal are stored at the next start")
                    return
                else:
                    retry_at = time.monotonic() + 1.0
            if final and not self._chunks:
                return
            housekeeping = time.monotonic() >= next_housekeeping and not final
            if due or housekeeping:
                # Roll-over is checked after every flush (two stat calls), so a partition never
                # grows far past its share of the budget; retention runs on its interval.
                self._housekeeping(retention=housekeeping)
            if housekeeping:
                next_housekeeping = time.monotonic() + self.housekeeping_interval

    def _flush(self) -> bool:
        """Insert the oldest chunk into DuckDB; False when that failed."""
        with self._cond:
            chunk = self._chunks[0]
        with self._journal_lock:  # (the journal thread may be closing it meanwhile)
            if chunk.closed:
                pass
            elif chunk.segment != self.journal.segment:  # its segment already ended
                with self._cond:
                    chunk.closed = True
            else:  # due by time or for a reader: it ends here
                try:
                    self._close_chunk(chunk)
                except (StoreError, OSError) as e:
                    log.error("%s; retrying", e)
                    with self._cond:
                        self._flush_failures += 1
                        self._cond.notify_all()
                    return False
        try:
            self._insert(self._read_chunk(chunk), chunk.segment)
        except StoreError as e:
            log.error("%s; the records stay in the journal, retrying", e.message)
            with self._cond:
                self._flush_failures += 1
                self._cond.notify_all()
            return False
        self._applied_segment = chunk.segment
        self.journal.discard_through(chunk.segment)
        with self._cond:
            self._chunks.popleft()
            self._flushed = chunk.last
            self._depth -= chunk.records
            self._cond.notify_all()
        self.last_progress = time.monotonic()
        return True

    def _read_chunk(self, chunk: _Chunk) -> list[dict[str, pa.Table]]:
        """The tables of a chunk's records, from its journal segment (complete and synced)."""
        path = self.journal.path(chunk.segment)
        try:
            records = list(read_segment(path))
        except OSError as e:
            raise StoreError(f"cannot read journal segment {path}: {e}") from e
        if len(records) < chunk.batches:  # read_segment warned; retrying cannot bring them back
            log.error(
                "journal segment %s lost %d of its %d requests on disk after they were "
                "acknowledged; storing the %d that can be read",
                path.name,
                chunk.batches - len(records),
                chunk.batches,
                len(records),
            )
        return [record.tables for record in records]

    def _finish(
        self, group: list[PendingWrite], error: StoreError | None, release: bool = True
    ) -> None:
        """Answer the waiting receivers. Records that failed no longer count against the bound
        (``release``); journaled ones count until their flush."""
        if error is not None or release:
            with self._cond:
                self._depth -= sum(p.records for p in group)
                self._cond.notify_all()
        for pending in group:
            if error is None:
                self.telemetry.stored(pending.batch.signal, pending.batch.accepted)
            else:
                self.telemetry.failed(pending.batch.signal, pending.batch.accepted)
            pending.finish(error)
        if error is None and self.on_commit is not None:
            for pending in group:  # after the acknowledgements: followers never delay them
                try:
                    self.on_commit(pending.batch)
                except Exception:  # a follower's problem must not stop the writer
                    log.exception("passing records to followers failed")

    def _insert(self, batches: list[dict[str, pa.Table]], segment: int) -> None:
        """One transaction: every table's rows (tagged with the flush, which is the journal
        segment, where tracefilter.py says so), the flush's trace-id filter, and the journal
        segment they complete."""
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
        try:
            cur.execute("BEGIN")
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
                cur.register("_ophion_batch", combined)
                try:
                    cur.execute(
                        f"INSERT INTO {alias}.main.{name} BY NAME SELECT *{tag} FROM _ophion_batch",
                        [segment] if tag else [],
                    )
                finally:
                    cur.unregister("_ophion_batch")
            if trace_ids:
                cur.execute(
                    f"INSERT INTO {alias}.main.trace_filters VALUES (?, ?::BLOB::BIT)",
                    [segment, tracefilter.build(trace_ids)],
                )
            cur.execute(f"UPDATE {alias}.main.journal_applied SET segment = ?", [segment])
            cur.execute("COMMIT")
        except (duckdb.Error, pa.ArrowException) as e:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the failed statement may already have ended the transaction
            raise StoreError(f"cannot write to {self.partitions.current.path.name}: {e}") from e

    def _housekeeping(self, retention: bool) -> None:
        import duckdb

        now = self.clock()
        try:
            if self.partitions.roll_over_if_due(now, self.disk_budget, self.max_age_s):
                # The new partition carries the journal position from the start, so it stays
                # known when retention deletes the older ones.
                alias = self.partitions.current.alias
                self._cursor.execute(
                    f"UPDATE {alias}.main.journal_applied SET segment = ?",
                    [self._applied_segment],
                )
            if retention:
                self.partitions.apply_retention(now, self.max_age_s, self.disk_budget)
        except (duckdb.Error, OSError, StoreError) as e:
            log.error("housekeeping failed, will retry: %s", e)
