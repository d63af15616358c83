"""Append-only schema migrations for ophion's DuckDB files, recorded in the file they changed.

A migration is ``(version, description, apply)``; ``apply(con, catalog)`` changes the database
attached as ``catalog``. Released migrations are never edited or reordered: a change is a new
entry at the end of its list. Each runs in its own transaction with the row that records it in
``schema_migrations``, so a file is never left half migrated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

Apply = Callable[["duckdb.DuckDBPyConnection", str], None]
Migration = tuple[int, str, Apply]


def migrate(
    con: duckdb.DuckDBPyConnection, catalog: str, migrations: Sequence[Migration]
) -> list[int]:
    """Run the ``migrations`` not yet recorded in the database ``catalog``; return their versions."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {catalog}.schema_migrations "
        "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
    )
    done = {
        row[0] for row in con.execute(f"SELECT version FROM {catalog}.schema_migrations").fetchall()
    }
    ran = []
    for version, description, apply in migrations:
        if version in done:
            continue
        con.execute("BEGIN")
        try:
            apply(con, catalog)
            con.execute(
                f"INSERT INTO {catalog}.schema_migrations VALUES (?, ?, now()::TIMESTAMP)",
                [version, description],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        ran.append(version)
    return ran


def applied(con: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """The newest migration recorded in ``catalog`` (0 for none)."""
    # fetchall, not fetchone: a result left unread keeps its transaction open on ``con``, and
    # then no checkpoint can give back the blocks it still sees (the file grows with each one).
    [(newest,)] = con.execute(f"SELECT max(version) FROM {catalog}.schema_migrations").fetchall()
    return int(newest) if newest is not None else 0
