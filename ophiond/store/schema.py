"""Table layout of a partition file, its append-only migrations, and the stable views.

Each partition file (see :mod:`ophiond.store.partitions`) holds the five base tables below and
a ``schema_migrations`` table recording which migrations ran on it. Migrations are never edited
or reordered once released: a change is a new entry at the end of :data:`MIGRATIONS`.

The Arrow schemas of the batches the decoder produces are in :mod:`ophiond.model`;
``INSERT ... BY NAME`` maps them onto the tables, and a test checks that every Arrow column
exists in the migrated tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from ophiond.migrations import Migration

# Columns shared by every signal: where the record came from.
_ORIGIN = """
    service_name VARCHAR,
    resource_attributes JSON,
    resource_dropped_attributes_count UINTEGER,
    resource_schema_url VARCHAR,
    scope_name VARCHAR,
    scope_version VARCHAR,
    scope_attributes JSON,
    scope_dropped_attributes_count UINTEGER,
    scope_schema_url VARCHAR
"""

_MIGRATION_1 = f"""
CREATE TABLE spans (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    parent_span_id VARCHAR,
    trace_state VARCHAR,
    flags UINTEGER,
    name VARCHAR,
    kind VARCHAR,
    start_time TIMESTAMP_NS,
    end_time TIMESTAMP_NS,
    duration_ns BIGINT,
    status_code VARCHAR,
    status_message VARCHAR,
    http_method VARCHAR,
    http_route VARCHAR,
    http_status_code INTEGER,
    db_system VARCHAR,
    attributes JSON,
    dropped_attributes_count UINTEGER,
    dropped_events_count UINTEGER,
    dropped_links_count UINTEGER,
    {_ORIGIN}
);
CREATE TABLE span_events (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    span_name VARCHAR,
    time TIMESTAMP_NS,
    name VARCHAR,
    attributes JSON,
    dropped_attributes_count UINTEGER,
    service_name VARCHAR
);
CREATE TABLE span_links (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    linked_trace_id VARCHAR,
    linked_span_id VARCHAR,
    trace_state VARCHAR,
    flags UINTEGER,
    attributes JSON,
    dropped_attributes_count UINTEGER,
    service_name VARCHAR
);
CREATE TABLE logs (
    timestamp TIMESTAMP_NS,
    observed_timestamp TIMESTAMP_NS,
    severity_number INTEGER,
    severity_text VARCHAR,
    body VARCHAR,
    body_type VARCHAR,
    trace_id VARCHAR,
    span_id VARCHAR,
    flags UINTEGER,
    event_name VARCHAR,
    attributes JSON,
    dropped_attributes_count UINTEGER,
    {_ORIGIN}
);
CREATE TABLE metric_points (
    metric_name VARCHAR NOT NULL,
    description VARCHAR,
    unit VARCHAR,
    metric_type VARCHAR NOT NULL,
    temporality VARCHAR,
    is_monotonic BOOLEAN,
    metadata JSON,
    start_time TIMESTAMP_NS,
    timestamp TIMESTAMP_NS,
    attributes JSON,
    value DOUBLE,
    value_int BIGINT,
    count UBIGINT,
    sum DOUBLE,
    min DOUBLE,
    max DOUBLE,
    bucket_counts UBIGINT[],
    explicit_bounds DOUBLE[],
    scale INTEGER,
    zero_count UBIGINT,
    zero_threshold DOUBLE,
    positive_offset INTEGER,
    positive_bucket_counts UBIGINT[],
    negative_offset INTEGER,
    negative_bucket_counts UBIGINT[],
    quantiles DOUBLE[],
    quantile_values DOUBLE[],
    flags UINTEGER,
    exemplars JSON,
    {_ORIGIN}
);
"""


# The writer's place in the ingest journal (see ophiond.store.journal): the last journal
# segment whose records are in the store, written in the same transaction as they are.
_MIGRATION_2 = """
CREATE TABLE journal_applied (segment UBIGINT NOT NULL);
INSERT INTO journal_applied VALUES (0);
"""


def _sql(statement: str) -> Callable[[duckdb.DuckDBPyConnection, str], None]:
    def run(con: duckdb.DuckDBPyConnection, schema: str) -> None:
        con.execute(f"USE {schema}")
        try:
            con.execute(statement)
        finally:
            con.execute("USE memory")

    return run


# Tables whose ``attributes`` JSON is stored with zstd in partitions created from migration 3 on:
# 32 instead of 55 bytes per span for the benchmark's span attributes with DuckDB's default
# string compression (FSST), at the same insert cost; attribute searches decompress it more
# slowly (docs/performance.md). Log bodies keep the default: text search scans them.
_ZSTD_ATTRIBUTES = ("spans", "span_events", "span_links", "logs")


def _migration_3(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    """Re-create the tables above with zstd attributes when they are still empty (a new
    partition); a partition that already holds data keeps its encoding."""
    statements = {
        block.split("(", 1)[0].strip(): "CREATE TABLE " + block.strip()
        for block in _MIGRATION_1.split("CREATE TABLE ")[1:]
    }
    for table in _ZSTD_ATTRIBUTES:
        row = con.execute(f"SELECT count(*) FROM {schema}.main.{table}").fetchone()
        if row is None or row[0]:
            continue
        ddl = statements[table]
        assert ddl.count("    attributes JSON,") == 1, table
        ddl = ddl.replace("    attributes JSON,", "    attributes JSON USING COMPRESSION zstd,")
        con.execute(f"DROP TABLE {schema}.main.{table}")
        _sql(ddl)(con, schema)


# Tables whose rows carry the flush (journal segment) that wrote them; see tracefilter.py.
FLUSH_TAGGED = ("spans", "span_events", "span_links")


def _migration_4(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    """Flush tags and per-flush trace-id filters. Rows stored before have no tag: a filter row
    without bits says that they exist, and lookups read them without the filters' help."""
    for table in FLUSH_TAGGED:
        con.execute(f"ALTER TABLE {schema}.main.{table} ADD COLUMN flush UBIGINT")
    con.execute(f"CREATE TABLE {schema}.main.trace_filters (flush UBIGINT, bits BIT)")
    row = con.execute(f"SELECT count(*) FROM {schema}.main.spans").fetchone()
    if row is not None and row[0]:
        con.execute(f"INSERT INTO {schema}.main.trace_filters VALUES (NULL, NULL)")


# (version, description, function). Append only.
MIGRATIONS: list[Migration] = [
    (1, "spans, span events, span links, logs and metric points", _sql(_MIGRATION_1)),
    (2, "the last ingest-journal segment stored here", _sql(_MIGRATION_2)),
    (3, "attributes compressed with zstd (new partitions)", _migration_3),
    (4, "flush tags and per-flush trace-id filters", _migration_4),
]

TABLES = ("spans", "span_events", "span_links", "logs", "metric_points")


def migrate(con: duckdb.DuckDBPyConnection, schema: str) -> list[int]:
    """Run the migrations not yet recorded in the attached partition ``schema``; return them."""
    from ophiond import migrations

    return migrations.migrate(con, schema, MIGRATIONS)


# ---------------------------------------------------------------------------------------------
# Stable views (design section 7): the same names and columns whatever the partition layout.
# Timestamps are exposed as TIMESTAMP (microseconds, UTC) so they compare with now() and
# literals; the exact nanoseconds stay available in the *_unix_nano columns.

_VIEW_SELECTS = {
    "spans": (
        "* REPLACE (start_time::TIMESTAMP AS start_time, end_time::TIMESTAMP AS end_time), "
        "epoch_ns(start_time) AS start_time_unix_nano, epoch_ns(end_time) AS end_time_unix_nano"
    ),
    "span_events": "* REPLACE (time::TIMESTAMP AS time), epoch_ns(time) AS time_unix_nano",
    "span_links": "*",
    "logs": (
        "* REPLACE (timestamp::TIMESTAMP AS timestamp, "
        "observed_timestamp::TIMESTAMP AS observed_timestamp), "
        "epoch_ns(timestamp) AS time_unix_nano, "
        "epoch_ns(observed_timestamp) AS observed_time_unix_nano"
    ),
    "metric_points": (
        "* REPLACE (start_time::TIMESTAMP AS start_time, timestamp::TIMESTAMP AS timestamp), "
        "epoch_ns(start_time) AS start_time_unix_nano, epoch_ns(timestamp) AS time_unix_nano"
    ),
}


def view_statements(schemas: list[str]) -> list[str]:
    """``CREATE OR REPLACE VIEW`` for each stable view over the given partition schemas, and a
    ``raw_<table>`` view of the same rows with nanosecond timestamps and nothing computed, which
    ophion's own queries use so that time filters reach the stored columns."""
    statements = []
    for table in TABLES:
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {s}.main.{table}" for s in schemas)
        statements.append(f"CREATE OR REPLACE VIEW memory.main.raw_{table} AS {union}")
        # (the flush tag is ophion's bookkeeping, not telemetry; partitions opened read-only
        # from before migration 4 have none, hence a pattern rather than EXCLUDE)
        statements.append(
            f"CREATE OR REPLACE VIEW memory.main.{table} AS "
            f"SELECT {_VIEW_SELECTS[table]} FROM "
            f"(SELECT COLUMNS(lambda c: c <> 'flush') FROM ({union}))"
        )
    return statements
