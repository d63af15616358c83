"""The single writer: a bounded queue of decoded batches, the ingest journal, and DuckDB.

Receivers call :meth:`Writer.submit` and wait on the returned :class:`PendingWrite`; they answer
the client with success only once it reports the batch durable. Two threads do the work:

- the *journal thread* takes every waiting batch at once, appends them to the ingest journal
  (:mod:`ophiond.store.journal`) with one ``fdatasync`` (group commit) and acknowledges them;
- the *flusher thread* inserts what the journal holds into DuckDB in large chunks, one per
  journal segment, read back from the segment's file, so that waiting records take no memory
  (DuckDB needs a third of the CPU per record, and stores them more compactly, than with one
  request per commit), spans sorted by trace id and log records by time
  (:mod:`ophiond.store.inserting`). It flushes when enough records wait, when the oldest has
  waited ``flush_interval``, and whenever a reader asks (:meth:`Writer.sync`, called before
  every query), so readers see every acknowledged record. Between flushes it runs
  housekeeping (roll-over, retention).

The bound applies to records accepted and not yet in DuckDB (queued or journaled); when it is
reached :class:`QueueFull` tells the receiver to answer with a retryable error. On start the
journal's records that DuckDB lacks are replayed (:meth:`Writer.recover`).

No record can stop storage: when a flush fails, the inserter looks for the request(s) that make
it fail (halving the chunk in trial transactions that are rolled back), moves them to the
dead-letter directory with DuckDB's reason (:mod:`deadletter`) and stores the rest
(:mod:`ophiond.store.inserting`). What the journal lost on disk before DuckDB had it is named
in the log, the audit log and ``losses.jsonl`` (:mod:`ophiond.store.losses`). A journal
segment is deleted only once a checkpoint has put its records in the partition file itself,
so losing DuckDB's write-ahead log cannot lose an acknowledged record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ophiond.batchio import encode_tables
from ophiond.errors import QueueFull, StoreError, WriterStopped
from ophiond.store.deadletter import DeadLetters
from ophiond.store.inserting import Inserter, by_signal
from ophiond.store.journal import (
    Journal,
    JournalLoss,
    JournalRecord,
    encode_record,
    find_losses,
    read_segment,
)
from ophiond.store.losses import LossLog
from ophiond.store.partitions import ROW_GROUP_SIZE

if TYPE_CHECKING:
    from ophiond.model import DecodedBatch, Recorder
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
# A checkpoint folds DuckDB's write-ahead log into the partition file; only then are the
# flushed journal segments deleted. At most this long after a flush, or once the flushed
# segments waiting for it hold this many bytes (bounds the journal's size on disk).
CHECKPOINT_INTERVAL_S = 30.0
CHECKPOINT_BYTES = 128 << 20  # (or an eighth of the disk budget, when that is less)


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

    __slots__ = (
        "segment",
        "batches",
        "records",
        "by_signal",
        "size",
        "since",
        "last",
        "closed",
        "loss_noted",
    )

    def __init__(self, segment: int) -> None:
        self.segment = segment
        self.batches = 0  # journal records (one per accepted request)
        self.records = 0
        self.by_signal: dict[str, int] = {}
        self.size = 0  # bytes of its records in the journal, about what they hold in memory
        self.since = time.monotonic()
        self.last = 0  # the writer's count of journaled batches when the last one came in
        self.closed = False  # its segment is complete: no more appends go to it
        self.loss_noted = False  # what the disk lost of it was counted (at a failed flush)

    def add(self, signal: str, records: int, size: int, sequence: int) -> None:
        self.batches += 1
        self.records += records
        self.by_signal[signal] = self.by_signal.get(signal, 0) + records
        self.size += size
        self.last = sequence


class Writer:
    """Owns all writes to the store; runs housekeeping (roll-over, retention) after every
    flush and when asked (:meth:`housekeep`, the daemon's scheduled job)."""

    def __init__(
        self,
        partitions: PartitionSet,
        telemetry: Telemetry,
        capacity: int,
        disk_budget: int,
        max_age_s: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        flush_records: int = FLUSH_RECORDS,
        flush_interval: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.partitions = partitions
        self.telemetry = telemetry
        self.capacity = capacity
        self.disk_budget = disk_budget
        self.max_age_s = max_age_s
        self.clock = clock
        # Half the bound, so that a flush can run while as many records arrive.
        self.flush_records = max(1, min(flush_records, capacity // 2))
        # And at most a 64th of the disk budget in memory, so that one flush never writes more
        # than a partition's share of a small budget (roll-over and retention work per flush).
        self.flush_bytes = max(FLUSH_MIN_BYTES, disk_budget // 64)
        self.flush_interval = flush_interval
        self.journal = Journal(partitions.data_dir / "journal")
        self.dead_letters = DeadLetters(partitions.data_dir / "dead-letter")
        self._cursor = partitions.con.cursor()
        # Puts journal records in DuckDB, and moves the requests DuckDB refuses to the dead
        # letters (it holds make_room and fatal: see the properties below).
        self.inserter = Inserter(self._cursor, partitions, self.dead_letters)
        # What the journal lost on disk before DuckDB had it (losses), and where that is kept.
        self.loss_log = LossLog(partitions.data_dir / "losses.jsonl", self.journal)
        # The last flush's error while storage is failing (None when the last one worked),
        # and since when it has been failing.
        self.storage_error: str | None = None
        self.failing_since: float | None = None
        # Called with each acknowledged batch (the live log feed listens here).
        self.on_commit: Callable[[DecodedBatch], None] | None = None
        self._audit: Recorder | None = None
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
        # Housekeeping rounds asked for (housekeep()) and done, and the last round's error.
        self._housekeeping_asked = 0
        self._housekeeping_done = 0
        self._housekeeping_error: str | None = None
        self._applied_segment = 0
        # The last segment a checkpoint made durable in a partition file, when that was, and
        # the journal bytes flushed since (deleted at the next checkpoint).
        self._checkpointed_segment = 0
        self._checkpointed_at = time.monotonic()
        self._unchecked_bytes = 0
        self._stopping = False
        self._journal_done = False
        self._thread = threading.Thread(
            target=self._guarded, args=(self._journal_loop,), name="ophion-writer", daemon=True
        )
        self._flusher = threading.Thread(
            target=self._guarded, args=(self._flush_loop,), name="ophion-flusher", daemon=True
        )
        self.last_progress = time.monotonic()

    # -- what the daemon sets and reads (kept by the parts that use them) ---------------------

    @property
    def losses(self) -> list[JournalLoss]:
        """What the journal lost on disk before DuckDB had it, found at start or at a flush,
        this run or an earlier one (kept in losses.jsonl until someone deletes it)."""
        return self.loss_log.losses

    @property
    def fatal(self) -> str | None:
        """Set when DuckDB invalidated the database: only a restart helps
        (see :meth:`Inserter._note_fatal`)."""
        return self.inserter.fatal

    @property
    def make_room(self) -> Callable[[], int] | None:
        """Called when DuckDB has no memory for an insert: stops the queries holding it (ingest
        goes first) and returns how many there were (query.stop_readers)."""
        return self.inserter.make_room

    @make_room.setter
    def make_room(self, make_room: Callable[[], int] | None) -> None:
        self.inserter.make_room = make_room

    @property
    def audit(self) -> Recorder | None:
        """The audit log: partitions retention deletes, requests dead-lettered or lost."""
        return self._audit

    @audit.setter
    def audit(self, audit: Recorder | None) -> None:
        self._audit = self.inserter.audit = self.loss_log.audit = audit

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

        Returns how many records were replayed. Called once, before :meth:`start`. A record
        DuckDB refuses goes to the dead letters, so a journal record never stops a start;
        whatever the journal lost on disk is named in the log and in :attr:`losses`.
        """
        applied = self.partitions.journal_position()
        # First what each segment holds and lacks (its records dropped at once: a backlog
        # need not fit in memory), then the records, one segment at a time.
        summaries = [
            (number, dataclasses.replace(contents, records=[]))
            for number, contents in self.journal.replay(after=applied)
        ]
        for loss in find_losses(applied, summaries):
            self.loss_log.record(loss)
            self.loss_log.keep_damaged(loss.segment)
        replayed = 0
        for segment, _summary in summaries:
            records = read_segment(self.journal.path(segment)).records
            if not records:
                continue
            dead = self.inserter.store(records, segment)
            stored = by_signal(records)
            for signal, n in stored.items():
                self.telemetry.recovered(signal, n - dead.get(signal, 0))
            replayed += sum(stored.values()) - sum(dead.values())
            self._applied_segment = segment
        # (at least 1: DuckDB then always knows a segment, so the segment opened next, which
        # must exist at the next start, is known to have existed even in a new store)
        last = max([applied, *self.journal.segments(), 1])
        newest = summaries[-1][1].last_sequence if summaries and summaries[-1][0] == last else None
        self._applied_segment = max(self._applied_segment, applied)
        if last > self._applied_segment:  # segments with nothing to store: DuckDB has them all
            self.inserter.insert([], last)
            self._applied_segment = last
        self.journal.open(after=last, previous=newest)
        self._checkpoint()
        if replayed:
            log.info("stored %d records from the ingest journal (after an unclean stop)", replayed)
        return replayed

    def start(self) -> None:
        """Start the writer's threads; the flusher's first work is a housekeeping round (a
        daemon started on a new day rolls over before it writes)."""
        if not self.journal.segment:
            self.recover()
        self._housekeeping_asked = 1
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
        self._checkpoint()
        self.journal.close()

    def housekeep(self, timeout: float = 300.0) -> None:
        """Have the flusher run a housekeeping round (retention, roll-over, and a checkpoint
        when idle) and wait for it: what the daemon's ``housekeeping`` job does, so that age
        limits and roll-over happen while no data comes. Raises :class:`StoreError` when the
        round failed or did not run within ``timeout``."""
        with self._cond:
            self._housekeeping_asked += 1
            ticket = self._housekeeping_asked
            self._cond.notify_all()
            ended = self._cond.wait_for(
                lambda: self._housekeeping_done >= ticket or self._journal_done, timeout
            )
            error = self._housekeeping_error
            done = self._housekeeping_done >= ticket
        if not ended:
            raise StoreError(f"housekeeping did not run within {timeout:g} s (a flush is long)")
        if not done:
            raise StoreError("housekeeping did not run: the writer has stopped")
        if error is not None:
            raise StoreError(f"housekeeping failed, will retry: {error}")

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
                    chunk.add(p.batch.signal.value, p.records, frame.length, self._journaled)
                    # (counted here, before the flusher can see the chunk: accepted is never
                    # behind stored)
                    self.telemetry.accepted(p.batch.signal, p.batch.accepted)
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
                    asked = self._housekeeping_asked
                    housekeeping = not final and asked > self._housekeeping_done
                    if due or (final and oldest is None) or housekeeping:
                        break
                    wake = []
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
            if due or housekeeping:
                # Roll-over and retention after every flush, not only on the interval: a flush
                # is what takes the store past its disk budget, and checking costs a stat call
                # per partition file. (Retention on the interval alone let roll-overs pile up
                # sealed partitions past the budget until its next round.)
                error = self._housekeeping()
                # A quiet daemon checkpoints at its scheduled housekeeping; a busy one by the
                # interval or the bytes waiting.
                idle = housekeeping and self._applied_segment > self._checkpointed_segment
                self._checkpoint(force=idle)
                if housekeeping:
                    with self._cond:
                        self._housekeeping_done = asked
                        self._housekeeping_error = error
                        self._cond.notify_all()

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
                    self._flush_failed(StoreError(f"{e}; retrying"))
                    return False
        try:
            records = self._read_chunk(chunk)
            dead = self.inserter.store(records, chunk.segment)
        except StoreError as e:
            self._flush_failed(e)
            return False
        self._applied_segment = chunk.segment
        self._unchecked_bytes += chunk.size
        read = by_signal(records)
        for signal, accepted in chunk.by_signal.items():
            lost = accepted - read.get(signal, 0)
            dead_lettered = dead.get(signal, 0)
            self.telemetry.flushed(signal, accepted - lost - dead_lettered, dead_lettered, lost)
        with self._cond:
            self._chunks.popleft()
            self._flushed = chunk.last
            self._depth -= chunk.records
            self.storage_error = self.failing_since = None
            self._cond.notify_all()
        self.last_progress = time.monotonic()
        return True

    def _flush_failed(self, error: StoreError) -> None:
        log.error("%s; the records stay in the journal, retrying", error.message)
        with self._cond:
            self._flush_failures += 1
            self.storage_error = error.message
            if self.failing_since is None:
                self.failing_since = time.time()
            self._cond.notify_all()

    def _read_chunk(self, chunk: _Chunk) -> list[JournalRecord]:
        """The records of a chunk, from its journal segment (complete and synced); those the
        disk lost since are counted and named."""
        path = self.journal.path(chunk.segment)
        try:
            contents = read_segment(path)
        except OSError as e:
            if not isinstance(e, FileNotFoundError):
                raise StoreError(f"cannot read journal segment {path}: {e}") from e
            if not chunk.loss_noted:  # (once, however often the flush is retried)
                chunk.loss_noted = True
                self.loss_log.record(
                    JournalLoss(chunk.segment, chunk.batches, True, "the file is missing")
                )
            return []
        if len(contents.records) < chunk.batches and not chunk.loss_noted:
            # Retrying cannot bring them back: said once, however often the flush is retried.
            chunk.loss_noted = True
            where = "; ".join(contents.damaged) or f"{contents.tail} bytes at its end damaged"
            self.loss_log.record(
                JournalLoss(chunk.segment, chunk.batches - len(contents.records), True, where)
            )
            self.loss_log.keep_damaged(chunk.segment)
            log.error(
                "journal segment %s lost %d of its %d requests on disk after they were "
                "acknowledged; storing the %d that can be read",
                path.name,
                chunk.batches - len(contents.records),
                chunk.batches,
                len(contents.records),
            )
        return contents.records

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
            if error is not None:  # (accepted ones were counted as they were journaled)
                self.telemetry.failed(pending.batch.signal, pending.batch.accepted)
            pending.finish(error)
        if error is None and self.on_commit is not None:
            for pending in group:  # after the acknowledgements: followers never delay them
                try:
                    self.on_commit(pending.batch)
                except Exception:  # a follower's problem must not stop the writer
                    log.exception("passing records to followers failed")

    def _checkpoint(self, force: bool = True) -> None:
        """Fold DuckDB's write-ahead log into the current partition's file, then delete the
        journal segments that made durable. Unless ``force``, only once the interval passed
        or enough flushed segments wait for it."""
        import duckdb

        if not force and (
            self._applied_segment <= self._checkpointed_segment
            or (
                self._unchecked_bytes < min(CHECKPOINT_BYTES, self.disk_budget // 8)
                and time.monotonic() - self._checkpointed_at < CHECKPOINT_INTERVAL_S
            )
        ):
            return
        segment = self._applied_segment
        try:
            self._cursor.execute(f"CHECKPOINT {self.partitions.current.alias}")
        except duckdb.Error as e:
            log.warning("checkpoint failed (retried later; the journal keeps the records): %s", e)
            return
        self._checkpointed_segment = segment
        self._checkpointed_at = time.monotonic()
        self._unchecked_bytes = 0
        self.journal.discard_through(segment)

    def _retire(self, now: dt.datetime) -> None:
        for retired in self.partitions.apply_retention(now, self.max_age_s, self.disk_budget):
            if self.audit is not None:
                self.audit.record(
                    "retention",
                    "partition.delete",
                    retired.path.name,
                    reason=retired.reason,
                    bytes=retired.bytes,
                )

    def _housekeeping(self) -> str | None:
        """Retention and roll-over; the error when they failed (retried next round)."""
        import duckdb

        now = self.clock()
        try:
            # Retention before the roll-over too: sealing checkpoints the current partition,
            # which holds its newest rows twice on disk (file and write-ahead log) for a moment.
            self._retire(now)
            if self.partitions.roll_over_if_due(now, self.disk_budget, self.max_age_s):
                # The new partition carries the journal position from the start, so it stays
                # known when retention deletes the older ones.
                alias = self.partitions.current.alias
                self._cursor.execute(
                    f"UPDATE {alias}.main.journal_applied SET segment = ?",
                    [self._applied_segment],
                )
                self._checkpoint()  # (the old one was checkpointed as it was sealed)
                # (a sealed file can take a little more than its write-ahead log did)
                self._retire(now)
        except (duckdb.Error, OSError, StoreError) as e:
            log.error("housekeeping failed, will retry: %s", e)
            return str(e)
        return None
