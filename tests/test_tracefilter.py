"""Per-flush trace-id filters: a trace lookup reads only the flushes that may hold the trace,
and still finds every span, event and link, including rows stored before the filters existed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from test_journal import _writer
from test_store import T0, _open

from ophiond.otlp.decode import decode_traces
from ophiond.store import schema, tracefilter
from ophiond.store.partitions import PartitionSet, connect
from ophiond.store.queries import Queries


def _request(trace: int, spans: int, service: str = "checkout", first: int = 1) -> object:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    attr = resource_spans.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    scope = resource_spans.scope_spans.add()
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id = trace.to_bytes(16, "big")
        span.span_id = (trace * 1000 + first + i).to_bytes(8, "big")
        span.name, span.start_time_unix_nano, span.end_time_unix_nano = f"op{i}", 1_000 + i, 5_000
        event = span.events.add()
        event.name, event.time_unix_nano = f"event{i}", 1_000 + i
        link = span.links.add()
        link.trace_id, link.span_id = bytes(16), bytes(7) + b"\x01"
    return message


def _trace_id(trace: int) -> str:
    return trace.to_bytes(16, "big").hex()


def test_a_filter_holds_every_id_it_was_built_from_and_few_others() -> None:
    members = [_trace_id(n) for n in range(1, 2001)]
    others = [_trace_id(n) for n in range(100_001, 110_001)]
    con = duckdb.connect()
    con.execute("CREATE TABLE f (flush UBIGINT, bits BIT)")
    con.execute("INSERT INTO f VALUES (1, ?::BLOB::BIT)", [tracefilter.build(members)])
    # Every id's probes in one table, tested with the lookup's own condition in one query.
    ids = members + others
    columns = {"trace_id": ids} | {
        f"p{i}": [tracefilter.probes(t)[i] for t in ids] for i in range(tracefilter.PROBES)
    }
    types = [("trace_id", pa.string())] + [
        (f"p{i}", pa.uint64()) for i in range(tracefilter.PROBES)
    ]
    con.register("ids", pa.table(columns, schema=pa.schema(types)))
    test = tracefilter.sql_test()
    for i in range(tracefilter.PROBES):
        test = test.replace("?::UBIGINT", f"p{i}", 1)
    found = {row[0] for row in con.execute(f"SELECT trace_id FROM ids, f WHERE {test}").fetchall()}

    assert set(members) <= found
    assert len(found - set(members)) < 300  # about 1% of 10,000 expected; 3% is a broken hash


def test_lookups_find_a_trace_in_each_flush_that_holds_it(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_interval=3600.0)
    partitions.before_read = writer.sync
    writer.start()
    # Six flushes; trace 7 is in the second and the fifth, every other trace in one.
    for flush in range(6):
        writer.submit(decode_traces(_request(100 + flush, 3))).wait()
        if flush in (1, 4):
            writer.submit(decode_traces(_request(7, 2, f"svc{flush}", 10 * flush))).wait()
        writer.sync()
    queries = Queries(partitions, 30.0)
    trace = queries.trace(_trace_id(7))
    assert sorted(s["service_name"] for s in trace["spans"]) == ["svc1", "svc1", "svc4", "svc4"]
    assert [len(s["events"]) for s in trace["spans"]] == [1, 1, 1, 1]
    assert [len(s["links"]) for s in trace["spans"]] == [1, 1, 1, 1]
    assert len(queries.trace(_trace_id(103))["spans"]) == 3
    alias = partitions.current.alias
    filters = partitions.con.execute(f"SELECT count(*) FROM {alias}.main.trace_filters").fetchone()
    assert filters == (6,)
    # The bookkeeping column stays out of the views users query.
    columns = [d[0] for d in partitions.con.execute("SELECT * FROM spans LIMIT 0").description]
    assert "flush" not in columns and "trace_id" in columns
    writer.stop()
    partitions.close()


def test_spans_stored_before_the_filters_existed_are_still_found(tmp_path: Path) -> None:
    # A partition written by a version that stopped at migration 3.
    con = connect(256 << 20, tmp_path)
    con.execute(f"ATTACH '{tmp_path / '20261123T000000Z.duckdb'}' AS old")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] < 4])
        schema.migrate(con, "old")
    con.execute(
        "INSERT INTO old.main.spans (trace_id, span_id, name, service_name, start_time, end_time) "
        "VALUES (?, 'aa00000000000001', 'legacy', 'old-svc', '2026-11-23 00:00:01', "
        "'2026-11-23 00:00:02')",
        [_trace_id(7)],
    )
    con.close()

    partitions = PartitionSet(connect(256 << 20, tmp_path), tmp_path)
    partitions.open(T0 + dt.timedelta(hours=1))  # migrates the old partition to 4
    writer = _writer(partitions)
    partitions.before_read = writer.sync
    writer.start()
    writer.submit(decode_traces(_request(7, 1, "new-svc", 5))).wait()
    writer.submit(decode_traces(_request(8, 1, "new-svc"))).wait()
    queries = Queries(partitions, 30.0)
    assert sorted(s["name"] for s in queries.trace(_trace_id(7))["spans"]) == ["legacy", "op0"]
    assert [s["name"] for s in queries.trace(_trace_id(8))["spans"]] == ["op0"]
    writer.stop()
    partitions.close()
