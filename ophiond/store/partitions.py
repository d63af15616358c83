"""The store on disk: a directory of DuckDB files, one per period of arrival, read through views.

Layout: ``<data_dir>/YYYYMMDDTHHMMSSZ.duckdb``, named by the UTC time the partition was opened.
A new partition starts at each UTC day and whenever the current one outgrows its share of the
disk budget, so retention is deleting whole files (no DELETE, no vacuum) and sealed files are
never written again. All partitions are attached to one in-memory DuckDB instance; the stable
views (``spans``, ``logs``, ...) live in its ``memory`` catalog and are rebuilt whenever the set
of partitions changes. A transaction can write only one attached file, which suits a single
writer appending to the newest partition.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ophiond.errors import StoreError
from ophiond.store import schema

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?\.duckdb$")
# A partition never grows past this share of the disk budget, so the budget is kept to ~1/8.
_PARTITIONS_PER_BUDGET = 8
_MIN_PARTITION_BYTES = 1 << 20


@dataclass(frozen=True)
class Partition:
    """One DuckDB file of the store."""

    path: Path
    opened_at: dt.datetime

    @property
    def alias(self) -> str:
        return "p_" + self.path.stem.replace("-", "_").lower()

    def size(self) -> int:
        """Bytes on disk, write-ahead log included."""
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total


def list_partitions(data_dir: Path) -> list[Partition]:
    """The partition files in ``data_dir``, oldest first."""
    found = []
    if data_dir.is_dir():
        for path in data_dir.iterdir():
            match = _NAME_RE.match(path.name)
            if match:
                opened = dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=dt.UTC
                )
                found.append(Partition(path, opened))
    return sorted(found, key=lambda p: p.path.name)


def _new_partition_path(data_dir: Path, now: dt.datetime) -> Path:
    stem = now.strftime("%Y%m%dT%H%M%SZ")
    path = data_dir / f"{stem}.duckdb"
    n = 1
    while path.exists():
        path = data_dir / f"{stem}-{n}.duckdb"
        n += 1
    return path


def connect(memory_limit: int, threads: int = 2) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB instance configured for ophion (UTC, bounded memory)."""
    import duckdb

    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": f"{max(memory_limit, 64 << 20) // (1 << 20)}MB",
            "threads": threads,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


class PartitionSet:
    """The attached partitions of one DuckDB instance and the views over them.

    Only the writer thread changes the set (roll-over, retention); readers use cursors of
    ``self.con`` and see the views. ``lock`` serialises changes with view rebuilding.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, data_dir: Path, read_only: bool = False):
        self.con = con
        self.data_dir = data_dir
        self.read_only = read_only
        self.partitions: list[Partition] = []
        self.lock = threading.Lock()

    # -- opening -----------------------------------------------------------------------------

    def open(self, now: dt.datetime | None = None) -> None:
        """Attach every partition (migrating them when writable); create one if there is none."""
        import duckdb

        existing = list_partitions(self.data_dir)
        if not existing and self.read_only:
            raise StoreError(
                f"no data has been stored yet in {self.data_dir}",
                hint="start the daemon (ophion daemon start) and send it OTLP data",
            )
        with self.lock:
            for partition in existing:
                try:
                    self._attach(partition)
                except duckdb.Error as e:
                    raise StoreError(f"cannot open {partition.path}: {e}") from e
            if not self.read_only and not self.partitions:
                self._create(now or dt.datetime.now(dt.UTC))
            self._rebuild_views()

    def _attach(self, partition: Partition) -> None:
        mode = " (READ_ONLY)" if self.read_only else ""
        path = str(partition.path).replace("'", "''")
        self.con.execute(f"ATTACH '{path}' AS {partition.alias}{mode}")
        if not self.read_only:
            ran = schema.migrate(self.con, partition.alias)
            if ran:
                log.info("migrated %s to version %s", partition.path.name, ran[-1])
        self.partitions.append(partition)

    def _create(self, now: dt.datetime) -> Partition:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        partition = Partition(_new_partition_path(self.data_dir, now), now.replace(microsecond=0))
        self._attach(partition)
        log.info("opened partition %s", partition.path.name)
        return partition

    def _rebuild_views(self) -> None:
        for statement in schema.view_statements([p.alias for p in self.partitions]):
            self.con.execute(statement)

    # -- the writer's side ---------------------------------------------------------------------

    @property
    def current(self) -> Partition:
        return self.partitions[-1]

    def total_size(self) -> int:
        return sum(p.size() for p in self.partitions)

    def roll_over_if_due(self, now: dt.datetime, disk_budget: int) -> Partition | None:
        """Start a new partition at a new UTC day or when the current one is too big."""
        current = self.current
        too_big = current.size() > max(disk_budget // _PARTITIONS_PER_BUDGET, _MIN_PARTITION_BYTES)
        if current.opened_at.date() == now.date() and not too_big:
            return None
        with self.lock:
            # Seal the old file: fold its write-ahead log in so it is one self-contained file.
            self.con.execute(f"CHECKPOINT {current.alias}")
            partition = self._create(now)
            self._rebuild_views()
        return partition

    def apply_retention(self, now: dt.datetime, max_age_s: float, disk_budget: int) -> list[Path]:
        """Delete whole partitions, oldest first, that are past ``max_age_s`` or over budget.

        A sealed partition's data is no newer than the next partition's opening time, which is
        what its age is measured from. The current partition is never deleted.
        """
        doomed: list[Partition] = []
        sealed = self.partitions[:-1]
        cutoff = now - dt.timedelta(seconds=max_age_s)
        for partition, successor in zip(sealed, self.partitions[1:], strict=False):
            if successor.opened_at <= cutoff:
                doomed.append(partition)
        total = self.total_size() - sum(p.size() for p in doomed)
        for partition in sealed:
            if total <= disk_budget:
                break
            if partition not in doomed:
                doomed.append(partition)
                total -= partition.size()
        if not doomed:
            return []
        import duckdb

        removed = []
        with self.lock:
            for partition in doomed:
                try:
                    self.con.execute(f"DETACH {partition.alias}")
                except duckdb.Error as e:
                    log.warning("cannot detach %s yet, retrying later: %s", partition.path.name, e)
                    continue
                self.partitions.remove(partition)
                for p in (partition.path, partition.path.with_name(partition.path.name + ".wal")):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                removed.append(partition.path)
            self._rebuild_views()
        for path in removed:
            log.info("retention deleted partition %s", path.name)
        return removed

    def close(self) -> None:
        import duckdb

        with self.lock:
            for partition in self.partitions:
                try:
                    if not self.read_only:
                        self.con.execute(f"CHECKPOINT {partition.alias}")
                except duckdb.Error as e:  # closing must go on for the other files
                    log.warning("checkpoint of %s failed: %s", partition.path.name, e)
            self.con.close()
