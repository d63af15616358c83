"""What SQL a caller may run through ``ophion sql``: one statement that only reads.

Two checks, both on DuckDB's own parse of the text (never on the text itself):

1. The statement is a single ``SELECT`` (or an ``EXPLAIN`` of one): ``INSERT``, ``COPY``,
   ``ATTACH``, ``SET``, ``CHECKPOINT``, ``PRAGMA`` and the rest are refused.
2. Every function it calls only reads. A ``SELECT`` can still act through its functions:
   ``FROM force_checkpoint('p')`` holds the writer, ``FROM query('...')`` runs any SQL text,
   ``nextval`` advances a sequence, ``setseed`` changes the connection's state. The parse
   (``json_serialize_sql``) names every call, in subqueries, CTEs, lambdas and ``SUMMARIZE``
   or ``DESCRIBE`` of a query too, and whether it stands where a table goes.

Why an allow-list for table functions and a deny rule for the others, decided on DuckDB 2.0.1:

- *Table functions* (174) are where DuckDB's actions live: ``checkpoint``, ``force_checkpoint``,
  ``enable_logging``, ``enable_profiling``, ``truncate_duckdb_logs``, ``query``,
  ``query_table``, ``json_execute_serialized_sql``, ``register_external_resource``,
  ``add_grammar_extension``, file readers. DuckDB marks none of them (``has_side_effects`` is
  false for every table function) and each release adds some, so only the few a query over
  telemetry needs are allowed: generators, JSON tree walkers and catalogue listings.
- *Scalar, aggregate and window functions* (about 3,000) are computations; DuckDB itself flags
  the ones with side effects (``has_side_effects``: 18 of them). Those are refused, except the
  ones whose only effect is a value that differs per call (``random``, ``uuid``, ...). An
  allow-list here would break ordinary SQL with every DuckDB release. A built-in macro that
  calls a refused function (``pg_sleep`` calls ``sleep_ms``) is refused too, since macros are
  expanded after this check; ``json_serialize_plan`` is refused as it plans SQL text.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ophiond.errors import SqlRefused

if TYPE_CHECKING:
    import duckdb


# Table functions a query may read from. Everything else in a FROM clause that is a function
# (checkpoint, query, read_csv, enable_logging, ...) is refused.
TABLE_FUNCTIONS = frozenset(
    {
        # generators
        "range",
        "generate_series",
        "unnest",
        "repeat",
        # JSON documents as rows
        "json_each",
        "json_tree",
        # what exists: views, columns, types, functions
        "duckdb_columns",
        "duckdb_views",
        "duckdb_tables",
        "duckdb_schemas",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_keywords",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pg_timezone_names",
        "icu_calendar_names",
    }
)

# Functions DuckDB flags with side effects whose only effect is a value that differs per call.
_HARMLESS_VOLATILE = frozenset(
    {
        "random",
        "uuid",
        "uuidv4",
        "uuidv7",
        "gen_random_uuid",
        "error",  # raises the caller's own error
        "current_query",
        "current_query_id",
        "current_connection_id",
        "current_transaction_id",
    }
)

# Not flagged by DuckDB, still not reading: it binds and plans the SQL text it is given.
_ACTING_UNFLAGGED = frozenset({"json_serialize_plan"})

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)
_VIEWS_HINT = "ophion sql only reads; views: spans, span_events, span_links, logs, metric_points"


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN of one) that calls only reading functions."""
    select = _single_select(sql)
    table_calls, calls = _function_calls(_parser().parse(select))
    for name in table_calls:
        if name not in TABLE_FUNCTIONS:
            raise SqlRefused(
                f"{name}() is not allowed in ophion sql: only reading table functions are",
                hint="table functions allowed: " + ", ".join(sorted(TABLE_FUNCTIONS)),
            )
    refused = _parser().refused_functions()
    for name in calls:
        if name in refused:
            raise SqlRefused(
                f"{name}() is not allowed in ophion sql: it has side effects",
                hint=_VIEWS_HINT,
            )


def _single_select(sql: str) -> str:
    """The SELECT to inspect: the statement itself, or the one an EXPLAIN explains."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        first, _, rest = str(e).strip().partition("\n")
        raise SqlRefused(f"SQL error: {first}", hint=rest.strip() or None) from None
    if len(statements) != 1:
        raise SqlRefused(
            f"expected one statement, got {len(statements)}", hint="run statements one at a time"
        )
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs what it explains: check the explained statement as a query.
        inner = _EXPLAIN_RE.sub("", statement.query, count=1)
        try:
            inner_kinds = [s.type for s in duckdb.extract_statements(inner)]
        except duckdb.Error:
            inner_kinds = []
        if inner_kinds != [duckdb.StatementType.SELECT]:
            raise SqlRefused(
                "only SELECT queries are allowed, also under EXPLAIN",
                hint="the store is read-only from ophion sql",
            )
        return inner
    if statement.type != duckdb.StatementType.SELECT:
        raise SqlRefused(
            f"only SELECT queries are allowed, not {statement.type.name}", hint=_VIEWS_HINT
        )
    return statement.query


def _function_calls(tree: Any) -> tuple[set[str], set[str]]:
    """The names of the functions a parsed statement calls: (in FROM, elsewhere)."""
    table_calls: set[str] = set()
    calls: set[str] = set()
    for node in _nodes(tree):
        if node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            table_calls.add(str(node["function"].get("function_name", "")).lower())
        elif "function_name" in node:
            calls.add(str(node["function_name"]).lower())
    return table_calls, calls


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the parse tree; a table function's call node is not itself
    visited (its arguments are)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            if item.get("type") == "TABLE_FUNCTION" and isinstance(item.get("function"), dict):
                call = item["function"]
                stack.extend(v for k, v in item.items() if k != "function")
                stack.extend(call.get("arguments", []))
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class _Parser:
    """A private DuckDB connection for parsing (no data, no file access) and the function
    catalogue of the installed DuckDB."""

    def __init__(self) -> None:
        import duckdb

        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "enable_external_access": False,
                "threads": 1,
            },
        )
        self._refused: frozenset[str] | None = None

    def parse(self, select: str) -> Any:
        """DuckDB's parse tree of one SELECT, as JSON."""
        with self._lock:
            row = self._con.execute("SELECT json_serialize_sql(?)", [select]).fetchone()
        tree = json.loads(row[0]) if row else {}
        if tree.get("error"):
            # (json_serialize_sql knows every SELECT form; refuse what it cannot show us.)
            raise SqlRefused(
                f"cannot check this statement: {tree.get('error_message')}", hint=_VIEWS_HINT
            )
        return tree

    def refused_functions(self) -> frozenset[str]:
        """Scalar, aggregate and window functions and macros a query may not call."""
        with self._lock:
            if self._refused is None:
                self._refused = self._load_refused()
            return self._refused

    def _load_refused(self) -> frozenset[str]:
        flagged = {
            name
            for (name,) in self._con.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() "
                "WHERE has_side_effects AND function_type IN ('scalar', 'aggregate', 'window')"
            ).fetchall()
        }
        refused = (flagged - _HARMLESS_VOLATILE) | _ACTING_UNFLAGGED
        call = re.compile(r"\b(" + "|".join(sorted(map(re.escape, refused))) + r")\s*\(")
        macros = self._con.execute(
            "SELECT function_name, macro_definition FROM duckdb_functions() "
            "WHERE function_type = 'macro'"
        ).fetchall()
        refused |= {name for name, definition in macros if call.search(definition or "")}
        return frozenset(name.lower() for name in refused)


_PARSER: _Parser | None = None
_PARSER_LOCK = threading.Lock()


def _parser() -> _Parser:
    global _PARSER
    with _PARSER_LOCK:
        if _PARSER is None:
            _PARSER = _Parser()
        return _PARSER
