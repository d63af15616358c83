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
import os
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ophiond.errors import StoreError
from ophiond.store import schema

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?\.duckdb$")
# A partition spans at most a day, and at most this share of retention_max_age, so age
# retention deletes data at most max_age * (1 + 1/8) old.
_MAX_PARTITION_SPAN_S = 86400.0
_PARTITIONS_PER_MAX_AGE = 8
# A partition never grows past this share of the disk budget, so the budget is kept to ~1/8.
# Rows per DuckDB row group (its default is 122,880). Compression works per row group, so
# small ones cost disk: the benchmark's spans took 89 bytes each in groups of 16k rows, 73 in
# 32k and 67 in 64k (docs/performance.md). Each flush holds up to two row groups, so the
# larger the groups the more memory a flush takes. Trace lookups find a trace's rows by the
# per-flush trace-id filters (tracefilter.py), not by the row groups' min/max trace ids.
ROW_GROUP_SIZE = 32_768
_PARTITIONS_PER_BUDGET = 8
_MIN_PARTITION_BYTES = 1 << 20


@dataclass(frozen=True)
class Retired:
    """A partition retention deleted: which, why (``age`` or ``disk budget``), its size."""

    path: Path
    reason: str
    bytes: int


@dataclass(frozen=True)
class Partition:
    """One DuckDB file of the store."""

    path: Path
    opened_at: dt.datetime
    sequence: int = 0  # orders partitions opened within the same second

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


# DuckDB's file layout (storage version 64+): a main header block whose bytes 8-12 are "DUCK",
# then two database headers at 4096 and 8192 (the one with the higher iteration is current:
# checksum, iteration, meta block, free list, block count, block allocation size, ...), then
# the blocks. So a file shorter than 3 * 4096 + block count * block size was cut short.
_HEADER_BLOCK = 4096
_DATABASE_HEADER = struct.Struct("<QQQQQQ")


def damage(path: Path) -> str | None:
    """Why ``path`` cannot be a whole DuckDB file (cut short, or no DuckDB header), or None.
    Reads 12 kB: cheap enough for every partition at every start."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(3 * _HEADER_BLOCK)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if len(head) < 3 * _HEADER_BLOCK or head[8:12] != b"DUCK":
        return f"is not a DuckDB database file ({size} bytes, no DuckDB header)"
    headers = [_DATABASE_HEADER.unpack_from(head, offset) for offset in (4096, 8192)]
    _checksum, _iteration, _meta, _free, blocks, block_size = max(headers, key=lambda h: h[1])
    if not 4096 <= block_size <= 1 << 24 or block_size & (block_size - 1):
        return None  # a layout this check does not know: DuckDB itself will judge the file
    expected = 3 * _HEADER_BLOCK + blocks * block_size
    if size < expected:
        return f"was cut short: {size} bytes where its header says {expected}"
    return None


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
                found.append(Partition(path, opened, int(match.group(2) or 0)))
    return sorted(found, key=lambda p: (p.opened_at, p.sequence))


def _is_damage(error: Exception) -> bool:
    """Whether DuckDB refused to open a file because of what is in it (rather than, say, a
    lock another process holds, or a version too new)."""
    text = str(error).lower()
    return any(
        word in text
        for word in ("corrupt", "checksum", "could not read", "not a valid duckdb", "serializ")
    )


def _new_partition_path(data_dir: Path, now: dt.datetime) -> Path:
    stem = now.strftime("%Y%m%dT%H%M%SZ")
    path = data_dir / f"{stem}.duckdb"
    n = 1
    while path.exists():
        path = data_dir / f"{stem}-{n}.duckdb"
        n += 1
    return path


def connect(
    memory_limit: int, data_dir: Path, threads: int = 2, max_spill: int | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB instance for ophion: UTC, bounded memory, and no file access outside
    ``data_dir``, so user SQL cannot read other files, write files or load extensions.
    Queries spill at most ``max_spill`` bytes into ``data_dir/.tmp`` in all (``sql_max_spill``;
    DuckDB's default is 90% of the free disk)."""
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": f"{max(memory_limit, 64 << 20) // (1 << 20)}MB",
        "threads": threads,
        "temp_directory": str(data_dir / ".tmp"),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if max_spill is not None:
        config["max_temp_directory_size"] = f"{max_spill}B"
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")
    allowed = str(data_dir.absolute()).replace("'", "''").rstrip("/") + "/"
    con.execute(f"SET allowed_directories = ['{allowed}']")
    con.execute("SET enable_external_access = false")  # cannot be turned back on
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
        # Partitions found damaged at start and set aside: (file name, why, where it went).
        self.damaged: list[dict[str, str]] = []
        self.lock = threading.Lock()
        # Partitions retention is deleting: still attached (a query may be reading one), no
        # longer in the views. And a count of view changes, which readers use to tell a
        # statement that met a partition going away (worth running again) from a bad one.
        self._leaving: set[str] = set()
        self.generation = 0
        # Called before every read through the daemon: the writer makes every acknowledged
        # record visible (flushes its journal into DuckDB) so that readers see their writes.
        self.before_read: Callable[[], None] | None = None

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
                reason = damage(partition.path)
                if reason is None:
                    try:
                        self._attach(partition)
                        continue
                    except duckdb.Error as e:
                        # (a lock another process holds, or a permission, is no damage: the
                        # file stays where it is and the start fails, saying why)
                        if not _is_damage(e):
                            raise StoreError(
                                f"cannot open {partition.path}: {e}",
                                hint="another ophiond or `ophion sql` may have it open"
                                if "lock" in str(e).lower()
                                else None,
                            ) from e
                        reason = f"cannot be opened: {e}"
                self._set_aside(partition, reason)
            if self.read_only and not self.partitions:
                raise StoreError(
                    f"no partition in {self.data_dir} can be read",
                    hint="`ophion status` with the daemon running names the damaged ones",
                )
            if not self.read_only and not self.partitions:
                try:
                    self._create(now or dt.datetime.now(dt.UTC))
                except (duckdb.Error, OSError) as e:
                    raise StoreError(f"cannot create a partition in {self.data_dir}: {e}") from e
            self._rebuild_views()

    def _set_aside(self, partition: Partition, reason: str) -> None:
        """Leave a damaged partition out of the store (moved to ``damaged/`` when writable, so
        the next start does not trip on it), and say so; the daemon serves the rest."""
        import duckdb

        if partition.alias in {p.alias for p in self.partitions}:
            self.partitions.remove(partition)
        try:
            self.con.execute(f"DETACH DATABASE IF EXISTS {partition.alias}")
        except duckdb.Error:
            pass  # it never attached
        where = str(partition.path)
        if not self.read_only:
            aside = self.data_dir / "damaged"
            try:
                aside.mkdir(exist_ok=True)
                for p in (partition.path, partition.path.with_name(partition.path.name + ".wal")):
                    if p.exists():
                        os.replace(p, aside / p.name)
                where = str(aside / partition.path.name)
            except OSError as e:
                log.error("cannot move %s aside: %s", partition.path.name, e)
        self.damaged.append({"partition": partition.path.name, "reason": reason, "path": where})
        log.error(
            "partition %s %s; it is left out of the store%s",
            partition.path.name,
            reason,
            f" (moved to {where})" if where != str(partition.path) else "",
        )

    def _attach(self, partition: Partition) -> None:
        mode = " (READ_ONLY)" if self.read_only else f" (ROW_GROUP_SIZE {ROW_GROUP_SIZE})"
        path = str(partition.path).replace("'", "''")
        self.con.execute(f"ATTACH '{path}' AS {partition.alias}{mode}")
        if not self.read_only:
            ran = schema.migrate(self.con, partition.alias)
            if ran:
                log.info("migrated %s to version %s", partition.path.name, ran[-1])
        self.partitions.append(partition)

    def _create(self, now: dt.datetime) -> Partition:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = _new_partition_path(self.data_dir, now)
        match = _NAME_RE.match(path.name)
        sequence = int(match.group(2) or 0) if match else 0
        partition = Partition(path, now.replace(microsecond=0), sequence)
        self._attach(partition)
        log.info("opened partition %s", partition.path.name)
        return partition

    def _rebuild_views(self) -> None:
        aliases = [p.alias for p in self.partitions if p.alias not in self._leaving]
        for statement in schema.view_statements(aliases):
            self.con.execute(statement)
        self.generation += 1

    # -- the writer's side ---------------------------------------------------------------------

    @property
    def current(self) -> Partition:
        return self.partitions[-1]

    def journal_position(self) -> int:
        """The last ingest-journal segment whose records are in the store (0: none yet)."""
        union = " UNION ALL ".join(
            f"SELECT max(segment) AS segment FROM {p.alias}.main.journal_applied"
            for p in self.partitions
        )
        # (fetchall: a result left open keeps its transaction open, and CHECKPOINT refuses to
        # run while an older transaction is)
        rows = self.con.execute(f"SELECT coalesce(max(segment), 0) FROM ({union})").fetchall()
        return int(rows[0][0]) if rows else 0

    def total_size(self) -> int:
        return sum(p.size() for p in self.partitions)

    def roll_over_if_due(
        self, now: dt.datetime, disk_budget: int, max_age_s: float
    ) -> Partition | None:
        """Start a new partition at a new UTC day, when the current one is too big, or when it
        spans too much of the retention age."""
        current = self.current
        too_big = current.size() > max(disk_budget // _PARTITIONS_PER_BUDGET, _MIN_PARTITION_BYTES)
        span = min(_MAX_PARTITION_SPAN_S, max_age_s / _PARTITIONS_PER_MAX_AGE)
        too_old = (now - current.opened_at).total_seconds() >= span
        if current.opened_at.date() == now.date() and not too_big and not too_old:
            return None
        with self.lock:
            # Seal the old file: fold its write-ahead log in so it is one self-contained file.
            self.con.execute(f"CHECKPOINT {current.alias}")
            partition = self._create(now)
            self._rebuild_views()
        return partition

    def apply_retention(
        self, now: dt.datetime, max_age_s: float, disk_budget: int
    ) -> list[Retired]:
        """Delete whole partitions, oldest first, that are past ``max_age_s`` or over budget.

        A sealed partition's data is no newer than the next partition's opening time, which is
        what its age is measured from. The current partition is never deleted.
        """
        doomed: dict[Partition, str] = {}
        sealed = self.partitions[:-1]
        cutoff = now - dt.timedelta(seconds=max_age_s)
        for partition, successor in zip(sealed, self.partitions[1:], strict=False):
            if successor.opened_at <= cutoff:
                doomed[partition] = "age"
        total = self.total_size() - sum(p.size() for p in doomed)
        for partition in sealed:
            if total <= disk_budget:
                break
            if partition not in doomed:
                doomed[partition] = "disk budget"
                total -= partition.size()
        if not doomed:
            return []
        import duckdb

        removed = []
        with self.lock:
            # Out of the views first, so that no new statement reads them; then detached.
            self._leaving.update(p.alias for p in doomed)
            self._rebuild_views()
            for partition, reason in doomed.items():
                size = partition.size()
                try:
                    self.con.execute(f"DETACH {partition.alias}")
                except duckdb.Error as e:
                    log.warning("cannot detach %s yet, retrying later: %s", partition.path.name, e)
                    continue
                self.partitions.remove(partition)
                self._leaving.discard(partition.alias)
                for p in (partition.path, partition.path.with_name(partition.path.name + ".wal")):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                removed.append(Retired(partition.path, reason, size))
        for retired in removed:
            log.info("retention deleted partition %s (%s)", retired.path.name, retired.reason)
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
