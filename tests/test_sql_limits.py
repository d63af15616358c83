"""``ophion sql`` against a real daemon: only reading SQL runs, within its budgets, and never at
ingest's expense (issue 12: nothing accepted is ever stuck or lost)."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, make_sdk_spans, ophion

from ophiond.api.contract import SqlRequest
from ophiond.config import load_settings
from ophiond.errors import ConfigError, OphionError, QueryNotRun, SqlRefused
from ophiond.store.partitions import PartitionSet, connect
from ophiond.store.query import QuerySlots, run_query
from ophiond.store.readers import ReaderLimits, directory_size, limit_readers
from ophiond.store.sqlpolicy import check_read_only
from ophiond.store.writer import Writer
from ophiond.telemetry import Telemetry

# A query that spills without end: 300 M distinct hashes need GBs of hash table.
SPILLING = "SELECT count(DISTINCT hash(range)) FROM range(300000000)"


def call(
    daemon: RunningDaemon, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """One request to the daemon's TCP API with a bearer token: status and JSON body."""
    host, port = daemon.listen["api_tcp"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        conn.request(
            method, path, body=json.dumps(body).encode() if body else None, headers=headers
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def read_token(daemon: RunningDaemon) -> str:
    admin = (daemon.home / "state" / "admin.token").read_text().strip()
    status, created = call(daemon, admin, "POST", "/api/v1/tokens", {"name": "r", "role": "read"})
    assert status == 200, created
    return str(created["token"])


def export_spans(daemon: RunningDaemon, count: int, service: str) -> float:
    """Export ``count`` spans over OTLP/HTTP; return how long the acknowledgement took."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(endpoint=daemon.http_url("/v1/traces"), timeout=30)
    spans = make_sdk_spans(count, "op", service)
    started = time.monotonic()
    result = exporter.export(spans)
    took = time.monotonic() - started
    exporter.shutdown()  # type: ignore[no-untyped-call]
    assert result == SpanExportResult.SUCCESS, daemon.log()[-2000:]
    return took


def partition_alias(daemon: RunningDaemon) -> str:
    (path,) = (daemon.home / "data").glob("[0-9]*.duckdb")
    return "p_" + path.stem.replace("-", "_").lower()


def assert_one_line_error(result: Any, starts: str) -> None:
    """``ophion`` failed cleanly: exit 1, nothing on stdout, ``error:`` then ``hint:``."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {starts}"), result.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), result.stderr


class TempWatch:
    """The size of ``data/.tmp``, polled while a test runs; the daemon is killed if it passes
    ``kill_above`` (so that a daemon without a spill budget cannot fill the test's disk)."""

    def __init__(self, daemon: RunningDaemon, kill_above: int) -> None:
        self.directory = daemon.home / "data" / ".tmp"
        self.daemon = daemon
        self.kill_above = kill_above
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> TempWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, directory_size(self.directory))
            if self.peak > self.kill_above and self.daemon.process.poll() is None:
                self.daemon.process.send_signal(signal.SIGKILL)
            time.sleep(0.002)


# ---------------------------------------------------------------------------------------------
# What SQL may run


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM checkpoint()",
        "FROM force_checkpoint('p_x')",
        "SELECT * FROM query('CHECKPOINT')",
        "SELECT * FROM query_table('spans')",
        "SELECT * FROM json_execute_serialized_sql('{}')",
        "SELECT * FROM enable_logging()",
        "SELECT nextval('s')",
        "SELECT setseed(0.5)",
        "SELECT pg_sleep(1)",  # a macro over sleep_ms
        "SELECT write_log('x')",
        # hidden in a subquery, a lambda, a lateral join, SUMMARIZE and EXPLAIN ANALYZE
        "SELECT * FROM range(3) WHERE range IN (SELECT count(*) FROM checkpoint())",
        "SELECT list_transform([1, 2], x -> nextval('s'))",
        "SELECT * FROM range(1), LATERAL (SELECT * FROM force_checkpoint())",
        "SUMMARIZE SELECT * FROM checkpoint()",
        "EXPLAIN ANALYZE SELECT * FROM force_checkpoint()",
        'SELECT * FROM "Force_Checkpoint"()',
        "SELECT * FROM system.main.checkpoint()",
    ],
)
def test_functions_that_act_are_refused(sql: str) -> None:
    with pytest.raises(SqlRefused, match=r"\(\) is not allowed in ophion sql"):
        check_read_only(sql)


def test_checkpoints_are_refused_with_a_read_token_and_through_ophion_sql(
    daemon_factory: Any,
) -> None:
    daemon = daemon_factory("--api-listen", "127.0.0.1:0")
    export_spans(daemon, 3, "shop")
    alias = partition_alias(daemon)
    token = read_token(daemon)
    for sql in (
        f"SELECT * FROM force_checkpoint('{alias}')",
        f"FROM checkpoint('{alias}')",
        "SELECT * FROM checkpoint()",
    ):
        status, body = call(daemon, token, "POST", "/api/v1/sql", {"sql": sql})
        assert status == 400, (sql, body)
        assert "checkpoint() is not allowed in ophion sql" in body["error"], body
        assert body["hint"], body

    tcp = f"http://{daemon.listen['api_tcp']}"
    result = ophion(
        "sql", f"SELECT * FROM force_checkpoint('{alias}')", "--api", tcp, "--token", token
    )
    assert_one_line_error(result, "force_checkpoint() is not allowed in ophion sql")
    result = ophion("sql", "SELECT * FROM checkpoint()")  # the Unix socket
    assert_one_line_error(result, "checkpoint() is not allowed in ophion sql")

    # Nothing else was affected: the store answers and takes data as before.
    export_spans(daemon, 2, "shop")
    assert daemon.sql("SELECT count(*) AS n FROM spans") == [{"n": 5}]


def test_ordinary_analytic_sql_still_runs(daemon: RunningDaemon) -> None:
    export_spans(daemon, 4, "shop")
    export_spans(daemon, 2, "cart")
    queries = {
        "SELECT service_name, count(*) AS n, max(duration_ns) >= 0 AS ok FROM spans "
        "GROUP BY ALL ORDER BY n DESC": [
            {"service_name": "shop", "n": 4, "ok": True},
            {"service_name": "cart", "n": 2, "ok": True},
        ],
        # a join, a window function, JSON extraction and a regular expression
        "SELECT count(*) AS n FROM spans a JOIN spans b USING (trace_id, span_id)": [{"n": 6}],
        "SELECT name, row_number() OVER (PARTITION BY service_name ORDER BY name) AS r "
        "FROM spans WHERE service_name = 'cart' ORDER BY r": [
            {"name": "op-0", "r": 1},
            {"name": "op-1", "r": 2},
        ],
        "SELECT DISTINCT resource_attributes->>'$.\"service.name\"' AS s FROM spans "
        "WHERE regexp_matches(name, '^op-[0-3]$') ORDER BY s": [{"s": "cart"}, {"s": "shop"}],
        "SELECT count(*) AS n FROM span_events, span_links, logs, metric_points": [{"n": 0}],
        # the table functions that only read, and a random sample
        "SELECT count(*) AS n FROM range(10) r, unnest([1, 2]) u(x) WHERE random() < 2": [
            {"n": 20}
        ],
        "SELECT count(*) > 10 AS many FROM duckdb_columns() WHERE table_name = 'spans'": [
            {"many": True}
        ],
        "SELECT key FROM json_each('{\"a\": 1}')": [{"key": "a"}],
    }
    for sql, rows in queries.items():
        assert daemon.sql(sql) == rows, sql
    result = ophion("sql", "EXPLAIN SELECT count(*) FROM spans", "--json")
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Budgets


def test_sql_budgets_are_read_and_checked(tmp_path: Path) -> None:
    env = {"OPHION_HOME": str(tmp_path)}
    valid = load_settings(env=env).validate()
    assert (valid.sql_max_memory, valid.sql_max_spill, valid.sql_max_concurrent) == (
        32_000_000,  # auto: half of memory_limit
        1_000_000_000,
        2,
    )
    valid = load_settings(
        env={**env, "OPHION_MEMORY_LIMIT": "1GB", "OPHION_SQL_MAX_SPILL": "0"}
    ).validate()
    assert (valid.sql_max_memory, valid.sql_max_spill) == (500_000_000, 0)
    with pytest.raises(ConfigError, match="sql_max_memory must be between 1MiB and memory_limit"):
        load_settings(env={**env, "OPHION_SQL_MAX_MEMORY": "2GB"}).validate()
    with pytest.raises(ConfigError, match="sql_max_concurrent must be at least 1"):
        load_settings(env={**env, "OPHION_SQL_MAX_CONCURRENT": "0"}).validate()


def test_a_query_holds_its_sorts_and_hash_tables_to_sql_max_memory(daemon_factory: Any) -> None:
    daemon = daemon_factory(env={"OPHION_SQL_MAX_MEMORY": "20MiB"})
    assert daemon.sql("SELECT current_setting('operator_memory_limit') AS m") == [{"m": "20.0 MiB"}]


def test_a_query_is_stopped_at_its_spill_budget_and_the_temp_directory_stays_within_it(
    daemon_factory: Any,
) -> None:
    budget = 64_000_000
    daemon = daemon_factory(env={"OPHION_SQL_MAX_SPILL": "64MB", "OPHION_SQL_TIMEOUT": "60s"})
    with TempWatch(daemon, kill_above=4 * budget) as watch:
        result = ophion("sql", SPILLING)
    assert watch.peak <= budget, f"data/.tmp reached {watch.peak} bytes"
    assert daemon.process.poll() is None, "the test killed the daemon: it spilled past 256 MB"
    # (of the 64 MB, memory_limit's worth, up to half, is kept for the writer: docs/sql.md)
    assert_one_line_error(
        result,
        "query stopped: it needed more temporary disk than the 32 MB queries may spill "
        "(sql_max_spill)",
    )
    assert "raise sql_max_spill" in result.stderr.splitlines()[1]
    # Nothing else was affected.
    export_spans(daemon, 3, "after")
    assert daemon.sql("SELECT count(*) AS n FROM spans") == [{"n": 3}]


@pytest.mark.slow
def test_queries_beyond_sql_max_concurrent_wait_their_turn(daemon_factory: Any) -> None:
    daemon = daemon_factory(env={"OPHION_SQL_MAX_CONCURRENT": "1", "OPHION_SQL_TIMEOUT": "3s"})
    slow = "SELECT count(*) FROM range(100000000000) WHERE hash(range) = 0"
    outcomes: dict[str, Any] = {}

    def first() -> None:
        try:
            daemon.api.sql(SqlRequest(slow))
        except OphionError as e:
            outcomes["first"] = e.message

    sent = time.monotonic()
    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(1.0)  # (the first is in its slot by then; the API shows no running queries)
    second = daemon.api.sql(SqlRequest("SELECT 1 AS one"))
    waited = time.monotonic() - sent
    thread.join()
    assert outcomes["first"] == "query interrupted after 3s (sql_timeout)"
    # The second ran once the first gave up the only slot, at its time limit.
    assert second["rows"] == [[1]]
    assert waited >= 2.5, waited


def test_a_query_without_a_slot_for_its_whole_time_limit_is_not_started() -> None:
    slots = QuerySlots(1)
    with slots.hold(1.0), pytest.raises(QueryNotRun) as refused:
        with slots.hold(0.2):
            pass
    assert refused.value.message == (
        "query not started: the 1 sql_max_concurrent slots were busy for the whole 0.2s"
    )
    assert refused.value.http_status == 503
    with slots.hold(0.2):  # given back
        pass


# ---------------------------------------------------------------------------------------------
# Ingest first


@pytest.mark.slow
def test_exports_are_acknowledged_and_stored_while_heavy_queries_run(daemon: RunningDaemon) -> None:
    export_spans(daemon, 10, "before")
    stop = threading.Event()
    outcomes: list[str] = []

    def heavy_queries() -> None:
        # Memory-hungry queries, one after another, as someone exploring might run them: each
        # fills DuckDB's memory_limit, which the writer's flushes need too (and each asks for
        # a flush first, so flushes run while the other one holds the memory).
        while not stop.is_set():
            try:
                daemon.api.sql(
                    SqlRequest(
                        "SELECT max(length(s)) FROM (SELECT string_agg(range::VARCHAR, "
                        "',') s FROM range(3000000) GROUP BY range % 3)"
                    )
                )
                outcomes.append("ok")
            except OphionError as e:
                outcomes.append(e.message)

    threads = [threading.Thread(target=heavy_queries) for _ in range(2)]
    for thread in threads:
        thread.start()
    took = []
    try:
        for _ in range(25):
            took.append(export_spans(daemon, 200, "during"))
            time.sleep(0.2)
        # A following query sees every acknowledged span, while the heavy ones go on.
        assert daemon.sql("SELECT count(*) AS n FROM spans WHERE service_name = 'during'") == [
            {"n": 5000}
        ], daemon.log()[-3000:]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    # Generous: the machine is busy; an export waits only for the journal, never for DuckDB.
    assert max(took) < 10.0, took
    assert outcomes, "the heavy queries never ran"
    status = daemon.status()
    assert status["signals"]["traces"]["stored"] == 5010, status["signals"]
    assert status["storage"]["dead_letters"]["requests"] == 0, status["storage"]


def _store(data_dir: Path) -> tuple[PartitionSet, Writer]:
    partitions = PartitionSet(connect(256 << 20, data_dir), data_dir)
    partitions.open()
    writer = Writer(partitions, Telemetry(), 1_000_000, 10**12, 7 * 86400, flush_records=1)
    return partitions, writer


def _spans(n: int) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from ophiond.otlp.decode import decode_traces

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(n):
        span = scope.spans.add()
        span.trace_id, span.span_id = (i + 1).to_bytes(16, "big"), (i + 1).to_bytes(8, "big")
        span.name, span.start_time_unix_nano, span.end_time_unix_nano = f"op-{i}", 1_000, 2_000
    return decode_traces(request)


def test_a_flush_without_memory_stops_the_queries_holding_it_and_stores_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    partitions, writer = _store(tmp_path)
    readers = limit_readers(partitions, ReaderLimits())
    writer.make_room = readers.stop
    outcome: list[str] = []

    def long_query() -> None:
        try:
            run_query(
                partitions, "SELECT count(*) FROM range(100000000000) WHERE hash(range) = 0", 1, 60
            )
        except QueryNotRun as e:
            outcome.append(e.message)

    query = threading.Thread(target=long_query)
    query.start()
    deadline = time.monotonic() + 30
    while not readers._running:  # (the query runs, holding its reader, before the flush)
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.01)
    # The flush's insert finds no memory once, as when the query holds it.
    insert_rows = writer.inserter._insert_rows
    failures = [duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")]

    def short_of_memory(batches: Any, segment: int, slice_bytes: int | None = None) -> set[str]:
        if failures:
            raise failures.pop()
        return insert_rows(batches, segment, slice_bytes)

    monkeypatch.setattr(writer.inserter, "_insert_rows", short_of_memory)
    writer.start()
    writer.submit(_spans(3)).wait()
    writer.sync()
    query.join(10)
    assert outcome == [
        "query stopped: ophiond needed the memory it held to store incoming telemetry"
    ]
    assert partitions.con.execute("SELECT count(*) FROM spans").fetchone() == (3,)
    assert writer.dead_letters.summary()["requests"] == 0 and writer.storage_error is None
    writer.stop()
    partitions.close()


@pytest.mark.parametrize("make_room", [True, False])
def test_a_commit_that_fails_after_it_took_effect_is_not_stored_twice(
    tmp_path: Path, make_room: bool
) -> None:
    """DuckDB can report a COMMIT as failed (no memory for what follows it) when it took
    effect: trying the flush again must not store its records twice."""
    import duckdb

    class CommitThenFail:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor
            self.failed = False

        def execute(self, sql: str, *args: Any) -> Any:
            result = self._cursor.execute(sql, *args)
            if sql == "COMMIT" and not self.failed:
                self.failed = True
                raise duckdb.TransactionException(
                    "TransactionContext Error: Failed to commit: failed to allocate data of "
                    "size 2.0 KiB (64.1 MiB/61.0 MiB used)"
                )
            return result

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cursor, name)

    partitions, writer = _store(tmp_path)
    writer.make_room = (lambda: 1) if make_room else None
    writer.inserter._cursor = CommitThenFail(writer.inserter._cursor)  # type: ignore[assignment]
    writer.start()
    writer.submit(_spans(3)).wait()
    writer.sync()
    if writer.storage_error is not None:  # (without make_room: tried again after a second)
        writer.sync()
    writer.stop()
    assert partitions.con.execute("SELECT count(*) FROM spans").fetchone() == (3,)
    assert writer.dead_letters.summary()["requests"] == 0
    partitions.close()
