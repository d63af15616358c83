"""The store on its own: migrations, partitions, roll-over and retention, on real DuckDB files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ophiond.errors import QueryError, QueueFull, StoreError
from ophiond.model import arrow_schemas
from ophiond.otlp.decode import decode_traces
from ophiond.store import schema
from ophiond.store.partitions import PartitionSet, connect, list_partitions
from ophiond.store.query import open_read_only, run_query
from ophiond.store.writer import Writer
from ophiond.telemetry import Telemetry

T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)


def _trace_request(n: int, service: str = "checkout", payload: str = "") -> object:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attr = resource_spans.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    scope = resource_spans.scope_spans.add()
    for i in range(n):
        span = scope.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"op-{i}"
        span.start_time_unix_nano = 1_000
        span.end_time_unix_nano = 2_000
        if payload:
            a = span.attributes.add()
            a.key, a.value.string_value = "payload", payload
    return request


def _open(data_dir: Path, now: dt.datetime = T0) -> PartitionSet:
    partitions = PartitionSet(connect(256 << 20, data_dir), data_dir)
    partitions.open(now)
    return partitions


def _writer(partitions: PartitionSet, capacity: int = 1_000_000, budget: int = 10**12) -> Writer:
    # Flushed into DuckDB after every batch, so that the size-driven roll-over sees each one.
    return Writer(
        partitions,
        Telemetry(),
        capacity,
        budget,
        7 * 86400,
        clock=lambda: T0,
        flush_records=1,
    )


def test_every_arrow_column_exists_in_the_migrated_tables(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    alias = partitions.current.alias
    for table, arrow_schema in arrow_schemas().items():
        columns = {
            row[0]
            for row in partitions.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_name = ?",
                [alias, table],
            ).fetchall()
        }
        assert set(arrow_schema.names) <= columns, table
    partitions.close()


def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    alias = partitions.current.alias
    assert schema.migrate(partitions.con, alias) == []
    versions = partitions.con.execute(f"SELECT version FROM {alias}.schema_migrations").fetchall()
    assert [v[0] for v in versions] == [m[0] for m in schema.MIGRATIONS]
    partitions.close()


def test_group_commit_writes_all_batches_and_views_see_them(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions)
    writer.start()
    pending = [writer.submit(decode_traces(_trace_request(10, f"svc{i}"))) for i in range(5)]
    for p in pending:
        p.wait()
    writer.stop()
    rows = partitions.con.execute(
        "SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [(f"svc{i}", 10) for i in range(5)]
    assert writer.telemetry.snapshot()["traces"]["stored"] == 50
    partitions.close()


def test_a_full_queue_refuses_instead_of_growing(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions, capacity=15)  # not started: nothing drains
    writer.submit(decode_traces(_trace_request(10)))
    with pytest.raises(QueueFull):
        writer.submit(decode_traces(_trace_request(10)))
    writer.submit(decode_traces(_trace_request(5)))  # still fits
    assert writer.depth == 15
    writer.start()
    writer.stop()  # drains what was accepted
    assert partitions.con.execute("SELECT count(*) FROM spans").fetchone() == (15,)
    partitions.close()


def test_an_oversized_batch_is_taken_when_the_queue_is_empty(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions, capacity=5)
    writer.submit(decode_traces(_trace_request(20)))
    assert writer.depth == 20
    partitions.close()


def test_a_new_day_starts_a_new_partition(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    assert partitions.roll_over_if_due(T0 + dt.timedelta(hours=1), 10**12, 30 * 86400) is None
    new = partitions.roll_over_if_due(T0 + dt.timedelta(days=1), 10**12, 30 * 86400)
    assert new is not None and new.opened_at.date() == (T0 + dt.timedelta(days=1)).date()
    assert [p.path.name for p in list_partitions(tmp_path)] == [
        "20261120T100000Z.duckdb",
        "20261121T100000Z.duckdb",
    ]
    partitions.close()


def test_age_retention_deletes_partitions_whose_data_is_all_too_old(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    for day in (1, 2, 3):
        partitions.roll_over_if_due(T0 + dt.timedelta(days=day), 10**12, 30 * 86400)
    names = [p.path.name for p in partitions.partitions]
    # At T0+3d with a 36h limit: the T0 partition ended at T0+1d (gone), the T0+1d one ended at
    # T0+2d, only 24h ago (kept).
    removed = partitions.apply_retention(T0 + dt.timedelta(days=3), 36 * 3600, 10**12)
    assert [(r.path.name, r.reason) for r in removed] == [(names[0], "age")]
    assert [p.path.name for p in partitions.partitions] == names[1:]
    assert not (tmp_path / names[0]).exists()
    partitions.con.execute("SELECT count(*) FROM spans").fetchone()  # views still valid
    partitions.close()


def test_disk_budget_rolls_over_and_deletes_oldest_first(tmp_path: Path) -> None:
    budget = 8 << 20
    partitions = _open(tmp_path)
    clock = [T0]
    writer = Writer(
        partitions,
        Telemetry(),
        1_000_000,
        budget,
        30 * 86400,
        clock=lambda: clock[0],
        flush_records=1,
    )
    writer.start()
    for i in range(40):
        writer.submit(decode_traces(_trace_request(2000, payload=f"{i}-" + "x" * 200))).wait()
        writer.sync()
        clock[0] += dt.timedelta(seconds=1)
    writer.housekeep()  # a last round of retention, as the daemon's job runs it
    writer.stop()
    assert len(partitions.partitions) > 1
    assert partitions.total_size() <= budget + budget // 8 + (2 << 20)
    total = partitions.con.execute("SELECT count(*) FROM spans").fetchone()
    assert total is not None and 0 < total[0] < 40 * 2000
    # The newest data survived: retention removed the oldest partitions.
    payloads = {
        row[0].split("-")[0]
        for row in partitions.con.execute(
            "SELECT DISTINCT attributes->>'$.payload' FROM spans"
        ).fetchall()
    }
    assert "39" in payloads and "0" not in payloads
    partitions.close()


def test_read_only_open_sees_the_data_and_refuses_writes(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions)
    writer.start()
    writer.submit(decode_traces(_trace_request(3))).wait()
    writer.stop()
    partitions.close()
    readonly = open_read_only(tmp_path, 128 << 20)
    result = run_query(readonly, "SELECT count(*) AS n FROM spans", 10, 5)
    assert result.rows == [[3]]
    with pytest.raises(QueryError, match="only SELECT"):
        run_query(readonly, "DELETE FROM spans", 10, 5)
    readonly.close()


def test_read_only_open_of_an_empty_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no data has been stored yet"):
        open_read_only(tmp_path / "nothing", 128 << 20)


def test_sql_refuses_writes_and_times_out(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    for statement in (
        "DROP VIEW spans",
        "INSERT INTO spans (trace_id) VALUES ('x')",
        "COPY spans TO 'x.csv'",
    ):
        with pytest.raises(QueryError, match="only SELECT"):
            run_query(partitions, statement, 10, 5)
    with pytest.raises(QueryError, match="one statement"):
        run_query(partitions, "SELECT 1; SELECT 2", 10, 5)
    with pytest.raises(QueryError, match="interrupted after 0.3s"):
        run_query(partitions, "SELECT count(*) FROM range(100000000000) a", 10, 0.3)
    result = run_query(partitions, "SELECT * FROM range(5) r(x)", 3, 5)
    assert result.rows == [[0], [1], [2]] and result.truncated
    partitions.close()


def test_partitions_span_at_most_an_eighth_of_the_retention_age(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    max_age = 8 * 3600  # so a partition spans at most one hour
    assert partitions.roll_over_if_due(T0 + dt.timedelta(minutes=59), 10**12, max_age) is None
    assert partitions.roll_over_if_due(T0 + dt.timedelta(minutes=60), 10**12, max_age) is not None
    partitions.close()


def test_partitions_opened_in_the_same_second_keep_their_order(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    for i in range(11):
        # A one-second retention age: every call below, within the same second, rolls over.
        now = T0 + dt.timedelta(milliseconds=200 + 70 * i)
        assert partitions.roll_over_if_due(now, 10**12, 1) is not None
    created = [p.path.name for p in partitions.partitions]
    partitions.close()
    assert created[-1] == "20261120T100000Z-11.duckdb"
    assert [p.path.name for p in list_partitions(tmp_path)] == created
    reopened = _open(tmp_path)
    assert reopened.current.path.name == "20261120T100000Z-11.duckdb"
    reopened.close()


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("EXPLAIN ANALYZE DELETE FROM spans", "only SELECT queries are allowed"),
        ("EXPLAIN INSERT INTO spans (trace_id) VALUES ('x')", "only SELECT queries are allowed"),
        ("SELECT * FROM read_text('/etc/hostname')", "read_text.. is not allowed in ophion sql"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv.. is not allowed in ophion sql"),
    ],
)
def test_sql_cannot_write_or_reach_other_files(
    tmp_path: Path, statement: str, refusal: str
) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions)
    writer.start()
    writer.submit(decode_traces(_trace_request(2))).wait()
    writer.stop()
    with pytest.raises(QueryError, match=refusal):
        run_query(partitions, statement, 10, 5)
    assert partitions.con.execute("SELECT count(*) FROM spans").fetchone() == (2,)
    assert run_query(partitions, "EXPLAIN ANALYZE SELECT count(*) FROM spans", 10, 5).rows
    partitions.close()


def test_sql_errors_are_one_line_with_the_position_as_hint(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    with pytest.raises(QueryError) as err:
        run_query(partitions, "SELECT nope FROM spans", 10, 5)
    assert "\n" not in err.value.message and "nope" in err.value.message
    assert err.value.hint is not None and "LINE 1" in err.value.hint
    partitions.close()


def test_time_zone_values_come_back(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    result = run_query(partitions, "SELECT TIMESTAMPTZ '2026-11-23 10:00:00+00' AS t", 10, 5)
    assert result.rows == [["2026-11-23T10:00:00+00:00"]]
    partitions.close()


def test_a_crashed_writer_fails_waiting_requests_and_refuses_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ophiond.errors import WriterStopped

    partitions = _open(tmp_path)
    writer = _writer(partitions)

    def broken_append(frames: object) -> None:
        raise MemoryError("simulated")  # anything but a StoreError, which is handled

    monkeypatch.setattr(writer.journal, "append", broken_append)
    pending = writer.submit(decode_traces(_trace_request(3)))
    writer.start()
    with pytest.raises(StoreError, match="the writer failed"):
        pending.wait()
    with pytest.raises(WriterStopped):
        writer.submit(decode_traces(_trace_request(1)))
    writer._thread.join(5)
    assert not writer.is_healthy()  # so the daemon withholds the systemd watchdog ping
    partitions.close()


def test_a_query_that_meets_a_partition_retention_removed_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention takes a partition out of the views while a statement was planned on them:
    the statement runs once more instead of failing; a table that never existed still fails."""
    from ophiond.store import query

    partitions = _open(tmp_path)
    real_fetch = query._fetch
    calls = []

    def fetch_during_retention(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            partitions.generation += 1  # (what apply_retention's view rebuild does)
            raise query._CatalogError('SQL error: Catalog Error: schema "p_1" does not exist')
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(query, "_fetch", fetch_during_retention)
    assert query.run_query(partitions, "SELECT count(*) FROM spans", 10, 5.0).rows == [[0]]
    assert len(calls) == 2
    monkeypatch.setattr(query, "_fetch", real_fetch)
    with pytest.raises(query.QueryError, match="no_such_table"):
        query.run_query(partitions, "SELECT * FROM no_such_table", 10, 5.0)
    partitions.close()
