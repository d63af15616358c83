"""The state store's tables and their append-only migrations (see :mod:`ophiond.migrations`).

A new engine adds its tables as a new entry at the end of :data:`MIGRATIONS`; released
entries are never edited or reordered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from ophiond.migrations import Migration


def _audit_log(con: duckdb.DuckDBPyConnection, catalog: str) -> None:
    con.execute(f"CREATE SEQUENCE {catalog}.audit_id")
    con.execute(
        f"""
        CREATE TABLE {catalog}.audit_log (
            id BIGINT PRIMARY KEY DEFAULT nextval('{catalog}.audit_id'),
            time TIMESTAMP NOT NULL,      -- UTC
            actor VARCHAR NOT NULL,       -- who: 'ophiond', 'retention', 'token:NAME', 'socket'
            action VARCHAR NOT NULL,      -- what, dotted: 'daemon.start', 'token.create', ...
            subject VARCHAR,              -- what it was done to: a token, a partition, ...
            detail JSON                   -- the rest, as the action defines it
        )
        """
    )
    con.execute(f"CREATE INDEX audit_time ON {catalog}.audit_log (time)")


MIGRATIONS: list[Migration] = [
    (1, "the audit log", _audit_log),
]
