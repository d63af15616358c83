"""The state store: one DuckDB file the daemon alone writes, never touched by retention."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ophiond import migrations
from ophiond.errors import StoreError
from ophiond.state.schema import MIGRATIONS

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

FILE_NAME = "state.duckdb"
# The database's name inside DuckDB (its catalog): every statement names its tables with it.
CATALOG = "state"


class StateStore:
    """``<data_dir>/state.duckdb``, opened read-write by the daemon.

    Writes are few and small (an audit entry, an alert's new state), so they are serialised by
    one lock and each :meth:`transaction` is checkpointed into the file when it commits: the
    file alone holds everything committed, and copying it while the daemon runs is a backup
    (docs/architecture.md). Reads take a cursor of their own and do not wait for writes.
    """

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self._con = con
        self._lock = threading.Lock()
        self.version = migrations.applied(con, CATALOG)

    @classmethod
    def open(cls, data_dir: Path) -> StateStore:
        """Open (or create) the store in ``data_dir`` and bring its tables up to date.

        Raises :class:`StoreError` with what to do when the file cannot be used: held by
        another process, damaged, or written by a newer ophion.
        """
        import duckdb

        path = data_dir / FILE_NAME
        try:
            con = duckdb.connect(
                str(path),
                config={
                    "threads": 1,
                    "memory_limit": "64MB",
                    "enable_external_access": False,
                    # Small rows, few of them: 16 KiB blocks keep a new store at ~80 kB
                    # instead of ~1 MB (a file keeps the block size it was created with).
                    "default_block_size": "16384",
                },
            )
        except duckdb.IOException as e:
            raise StoreError(
                f"cannot open the state store {path}: {e}",
                hint="another ophiond may hold it (ophion daemon status), or the file is "
                "damaged: move it aside (alert states, silences and the audit log start empty) "
                "or restore a copy",
            ) from e
        except duckdb.Error as e:
            raise StoreError(
                f"cannot open the state store {path}: {e}",
                hint="move it aside to start with an empty state, or restore a copy",
            ) from e
        try:
            ran = migrations.migrate(con, CATALOG, MIGRATIONS)
            newest = migrations.applied(con, CATALOG)
        except duckdb.Error as e:
            con.close()
            raise StoreError(f"cannot migrate the state store {path}: {e}") from e
        if newest > MIGRATIONS[-1][0]:
            con.close()
            raise StoreError(
                f"the state store {path} was written by a newer ophion (schema {newest}, "
                f"this one knows {MIGRATIONS[-1][0]})",
                hint="run that newer ophion, or restore a copy made by this one",
            )
        if ran:
            con.execute("CHECKPOINT")
            log.info("state store %s: ran migrations %s", path, ", ".join(map(str, ran)))
        return cls(path, con)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside one transaction: committed and checkpointed when the block ends,
        rolled back when it raises. Raises :class:`StoreError` when the commit fails."""
        import duckdb

        with self._lock:
            try:
                cursor = self._con.cursor()
                cursor.execute("BEGIN")
            except duckdb.Error as e:
                raise StoreError(f"cannot write the state store {self.path}: {e}") from e
            try:
                try:
                    yield cursor
                except BaseException:
                    with contextlib.suppress(duckdb.Error):  # (the error raised says more)
                        cursor.execute("ROLLBACK")
                    raise
                try:
                    cursor.execute("COMMIT")
                except duckdb.Error as e:
                    raise StoreError(f"cannot write the state store {self.path}: {e}") from e
                try:
                    cursor.execute("CHECKPOINT")
                except duckdb.Error as e:
                    # Committed all the same (in the write-ahead log): the next change, or the
                    # next start, checkpoints it.
                    log.warning("state store %s: checkpoint failed: %s", self.path, e)
            finally:
                with contextlib.suppress(duckdb.Error):
                    cursor.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for reading what is committed."""
        cursor = self._con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def size(self) -> int:
        """Bytes on disk (the file and its write-ahead log)."""
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def close(self) -> None:
        with self._lock:
            self._con.close()
