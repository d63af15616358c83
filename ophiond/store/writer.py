"""The single writer: a bounded queue of decoded batches and one thread that commits them.

Receivers call :meth:`Writer.submit` and wait on the returned :class:`PendingWrite`; they answer
the client with success only once it reports the batch committed. The queue is bounded in
records (not requests), so memory stays bounded whatever the request sizes; when it is full
:class:`QueueFull` tells the receiver to answer with a retryable error. The writer takes every
waiting batch at once and commits them in one transaction (group commit), so many small
requests cost one commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ophiond.errors import OphionError, StoreError

if TYPE_CHECKING:
    import pyarrow as pa

    from ophiond.otlp.decode import DecodedBatch
    from ophiond.store.partitions import PartitionSet
    from ophiond.telemetry import Telemetry

log = logging.getLogger(__name__)


class QueueFull(OphionError):
    """The write queue has no room: the client should retry later."""


class WriterStopped(OphionError):
    """The daemon is shutting down and takes no more writes."""


class PendingWrite:
    """A batch on its way to disk; :meth:`wait` returns once it is committed or failed."""

    __slots__ = ("batch", "records", "_done", "error")

    def __init__(self, batch: DecodedBatch) -> None:
        self.batch = batch
        self.records = max(batch.accepted, 1)
        self._done = threading.Event()
        self.error: StoreError | None = None

    def finish(self, error: StoreError | None = None) -> None:
        self.error = error
        self._done.set()

    def wait(self) -> None:
        """Block until committed; raise the :class:`StoreError` when the commit failed."""
        self._done.wait()
        if self.error is not None:
            raise self.error


class Writer:
    """Owns all writes to the store; runs housekeeping (roll-over, retention) between commits."""

    def __init__(
        self,
        partitions: PartitionSet,
        telemetry: Telemetry,
        capacity: int,
        disk_budget: int,
        max_age_s: float,
        housekeeping_interval: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.partitions = partitions
        self.telemetry = telemetry
        self.capacity = capacity
        self.disk_budget = disk_budget
        self.max_age_s = max_age_s
        self.housekeeping_interval = housekeeping_interval
        self.clock = clock
        # Called with each committed batch (the live log feed listens here).
        self.on_commit: Callable[[DecodedBatch], None] | None = None
        self._queue: deque[PendingWrite] = deque()
        # Records queued or being committed: what the bound applies to.
        self._depth = 0
        self._in_flight: list[PendingWrite] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._guarded_run, name="ophion-writer", daemon=True)
        self._cursor = partitions.con.cursor()
        self.last_progress = time.monotonic()

    # -- the receivers' side ------------------------------------------------------------------

    def submit(self, batch: DecodedBatch) -> PendingWrite:
        """Queue a batch; raise :class:`QueueFull` when it does not fit (unless the queue is empty)."""
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
            self._cond.notify()
        return pending

    @property
    def depth(self) -> int:
        """Records waiting to be committed."""
        return self._depth

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Refuse new batches, commit every queued one, then return."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def is_healthy(self, stall_after: float = 60.0) -> bool:
        """False when the writer thread died or made no progress with work waiting."""
        if not self._thread.is_alive():
            return False
        return not (self._depth and time.monotonic() - self.last_progress > stall_after)

    # -- the writer thread --------------------------------------------------------------------

    def _guarded_run(self) -> None:
        """Run the loop; if it ever dies, fail what is waiting instead of leaving it hanging."""
        try:
            self._run()
        except BaseException:
            log.critical("the writer thread failed; refusing writes from now on", exc_info=True)
            with self._cond:
                self._stopping = True
                orphans = list(self._queue) + self._in_flight
                self._queue.clear()
                self._in_flight = []
            self._finish(orphans, StoreError("the writer failed; see the daemon's log"))

    def _run(self) -> None:
        next_housekeeping = time.monotonic()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    timeout = next_housekeeping - time.monotonic()
                    if timeout <= 0:
                        break
                    self._cond.wait(timeout)
                group = list(self._queue)
                self._queue.clear()
                self._in_flight = group
                stopping = self._stopping
            due = time.monotonic() >= next_housekeeping and not stopping
            if group:
                self._commit_group(group)
            self.last_progress = time.monotonic()
            if group or due:
                # Roll-over is checked after every commit (two stat calls), so a partition
                # never grows far past its share of the budget; retention runs on its interval.
                self._housekeeping(retention=due)
            if due:
                next_housekeeping = time.monotonic() + self.housekeeping_interval
            if stopping and not group:
                with self._cond:
                    if not self._queue:
                        return

    def _commit_group(self, group: list[PendingWrite]) -> None:
        try:
            self._write([p.batch for p in group])
        except StoreError as e:
            if len(group) == 1:
                log.error("write failed: %s", e)
                self._finish(group, e)
                return
            # One bad batch must not fail the others: commit them one by one.
            log.warning(
                "group commit of %d batches failed (%s); retrying one by one", len(group), e
            )
            for pending in group:
                self._commit_group([pending])
            return
        self._finish(group, None)

    def _finish(self, group: list[PendingWrite], error: StoreError | None) -> None:
        with self._cond:
            self._depth -= sum(p.records for p in group)
            done = {id(p) for p in group}
            self._in_flight = [p for p in self._in_flight if id(p) not in done]
        for pending in group:
            if error is None:
                self.telemetry.stored(pending.batch.signal, pending.batch.accepted)
            else:
                self.telemetry.failed(pending.batch.signal, pending.batch.accepted)
            pending.finish(error)
        if error is None and self.on_commit is not None:
            for pending in group:  # after the acknowledgements: followers never delay them
                self.on_commit(pending.batch)

    def _write(self, batches: list[DecodedBatch]) -> None:
        import duckdb
        import pyarrow as pa

        by_table: dict[str, list[pa.Table]] = {}
        for batch in batches:
            for name, table in batch.tables.items():
                if table.num_rows:
                    by_table.setdefault(name, []).append(table)
        if not by_table:
            return
        cur = self._cursor
        alias = self.partitions.current.alias
        try:
            cur.execute("BEGIN")
            for name, tables in by_table.items():
                combined = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
                cur.register("_ophion_batch", combined)
                try:
                    cur.execute(
                        f"INSERT INTO {alias}.main.{name} BY NAME SELECT * FROM _ophion_batch"
                    )
                finally:
                    cur.unregister("_ophion_batch")
            cur.execute("COMMIT")
        except duckdb.Error as e:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the failed statement may already have ended the transaction
            raise StoreError(f"cannot write to {self.partitions.current.path.name}: {e}") from e

    def _housekeeping(self, retention: bool) -> None:
        import duckdb

        now = self.clock()
        try:
            self.partitions.roll_over_if_due(now, self.disk_budget, self.max_age_s)
            if retention:
                self.partitions.apply_retention(now, self.max_age_s, self.disk_budget)
        except (duckdb.Error, OSError, StoreError) as e:
            log.error("housekeeping failed, will retry: %s", e)
