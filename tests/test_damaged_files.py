"""Nothing acknowledged is stuck or lost without a word: a record DuckDB refuses, a damaged
journal segment, a lost write-ahead log, a damaged partition file (issue 12, items 1 and 5).

Each test runs the real daemon, damages what a disk or a person could damage between two
runs, starts it again and checks what a user sees: what is stored, and what ``ophion status``
says was set aside or lost.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import RunningDaemon, ophion
from test_durability import Batch, export_grpc, make_batch, stored_span_ids

from ophiond.batchio import encode_tables
from ophiond.otlp.decode import decode_traces
from ophiond.store.journal import Journal, encode_record


def _stub(daemon: RunningDaemon) -> Any:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    channel = grpc.insecure_channel(daemon.grpc_endpoint)
    return trace_service_pb2_grpc.TraceServiceStub(channel)


def _send(daemon: RunningDaemon, *batches: Batch) -> list[str]:
    stub = _stub(daemon)
    for batch in batches:
        export_grpc(stub, batch)
    return [span_id for batch in batches for span_id in batch.span_ids]


def _journal(daemon: RunningDaemon) -> Journal:
    return Journal(daemon.home / "data" / "journal")


def _storage(daemon: RunningDaemon) -> dict[str, Any]:
    storage: dict[str, Any] = daemon.status()["storage"]
    return storage


def _segment_with_records(journal: Journal) -> Path:
    """The newest segment holding records (the daemon's unflushed ones)."""
    for number in reversed(journal.segments()):
        path = journal.path(number)
        if path.stat().st_size > 64:
            return path
    raise AssertionError(f"no journal segment with records in {journal.directory}")


def test_a_record_duckdb_refuses_is_set_aside_and_never_stops_a_start(
    daemon_factory: Any,
) -> None:
    """A journal record DuckDB cannot take (here a column of the wrong type, as a bug or an
    older version could leave) goes to the dead letters with DuckDB's reason; the records
    around it are stored, the daemon starts, and a second start stores nothing twice."""
    daemon = daemon_factory()
    before = _send(daemon, make_batch(3, "before"))
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL

    good = decode_traces(_request(make_batch(4, "good")))
    poison = dict(good.tables)
    spans = poison["spans"]
    index = spans.schema.get_field_index("duration_ns")
    poison["spans"] = spans.set_column(
        index, "duration_ns", pa.array(["not a number"] * spans.num_rows)
    )
    journal = _journal(daemon)
    journal.open(after=max(journal.segments()))
    journal.append(
        [
            encode_record("traces", 4, encode_tables(poison)),
            encode_record("traces", 4, encode_tables(good.tables)),
        ]
    )
    journal.close()

    restarted = daemon_factory(home=daemon.home)
    stored = stored_span_ids(restarted)
    assert sorted(stored) == sorted(before + good_ids(good))
    dead = _storage(restarted)["dead_letters"]
    assert dead["requests"] == 1 and dead["records"] == {"traces": 4}
    assert "duration_ns" in dead["last_reason"] or "not a number" in dead["last_reason"]
    assert len(list((daemon.home / "data" / "dead-letter").glob("*.journal"))) == 1

    result = ophion("status", env={"OPHION_HOME": str(daemon.home)})
    assert result.returncode == 0, result.stderr
    assert "dead letters" in result.stdout and "1 request(s)" in result.stdout

    assert restarted.stop() == 0
    again = daemon_factory(home=daemon.home)
    assert sorted(stored_span_ids(again)) == sorted(stored)
    assert _storage(again)["dead_letters"]["requests"] == 1  # counted from the directory


def _request(batch: Batch) -> Any:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    return trace_service_pb2.ExportTraceServiceRequest.FromString(batch.body)


def good_ids(batch: Any) -> list[str]:
    return [str(s) for s in batch.tables["spans"]["span_id"].to_pylist()]


def test_records_after_a_damaged_one_are_stored_and_the_loss_is_named(
    daemon_factory: Any,
) -> None:
    """16 bytes overwritten in a journal segment between two runs: the one request they hit
    is lost and ``ophion status`` says so (acknowledged); the requests after it are stored."""
    daemon = daemon_factory()
    batches = [make_batch(5, f"request-{i}") for i in range(3)]
    _send(daemon, *batches)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL  # before the 5 s flush
    path = _segment_with_records(_journal(daemon))
    data = bytearray(path.read_bytes())
    second = data.find(b"\xa7OPR", data.find(b"\xa7OPR") + 1)
    data[second + 60 : second + 76] = b"\x00" * 16
    path.write_bytes(bytes(data))

    restarted = daemon_factory(home=daemon.home)
    assert sorted(stored_span_ids(restarted)) == sorted(batches[0].span_ids + batches[2].span_ids)
    [loss] = _storage(restarted)["journal_losses"]
    assert loss["requests"] == 1 and loss["acknowledged"] is True
    assert "damaged" in loss["message"]
    result = ophion("status", env={"OPHION_HOME": str(daemon.home)})
    assert "journal loss" in result.stdout and "acknowledged" in result.stdout
    assert "1 request(s) lost (acknowledged)" in restarted.log()
    assert path.with_name(path.name + ".damaged").read_bytes() == bytes(data)  # kept for a look
    # Still named after another restart, until someone deletes data/losses.jsonl.
    assert restarted.stop() == 0
    again = daemon_factory(home=daemon.home)
    assert [x["message"] for x in _storage(again)["journal_losses"]] == [loss["message"]]


def test_a_damaged_segment_header_loses_nothing(daemon_factory: Any) -> None:
    """16 bytes overwritten at the very start of the segment being written: its records are
    found by their own framing and stored."""
    daemon = daemon_factory()
    batches = [make_batch(5, f"request-{i}") for i in range(3)]
    sent = _send(daemon, *batches)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    path = _segment_with_records(_journal(daemon))
    data = bytearray(path.read_bytes())
    data[0:16] = b"\xff" * 16
    path.write_bytes(bytes(data))

    restarted = daemon_factory(home=daemon.home)
    assert sorted(stored_span_ids(restarted)) == sorted(sent)


def test_a_partition_another_process_holds_is_not_taken_for_damage(daemon_factory: Any) -> None:
    """A lock is not damage: the daemon refuses to start, says why, and moves nothing."""
    import duckdb

    daemon = daemon_factory()
    kept = _send(daemon, make_batch(4, "kept"))
    assert daemon.stop() == 0
    [partition] = (daemon.home / "data").glob("[0-9]*.duckdb")
    holder = duckdb.connect(str(partition))  # (read-write: DuckDB locks the file)
    try:
        with pytest.raises(RuntimeError, match="another ophiond or `ophion sql`"):
            daemon_factory(home=daemon.home)
    finally:
        holder.close()
    assert partition.exists() and not (daemon.home / "data" / "damaged").exists()
    restarted = daemon_factory(home=daemon.home)
    assert sorted(stored_span_ids(restarted)) == sorted(kept)


def test_a_deleted_journal_segment_is_reported(daemon_factory: Any) -> None:
    daemon = daemon_factory()
    _send(daemon, make_batch(5, "doomed"))
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    _segment_with_records(_journal(daemon)).unlink()

    restarted = daemon_factory(home=daemon.home)
    assert stored_span_ids(restarted) == []
    losses = _storage(restarted)["journal_losses"]
    assert losses and all("missing" in loss["reason"] for loss in losses)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_lost_write_ahead_log_loses_no_acknowledged_record(
    daemon_factory: Any, damage: str
) -> None:
    """Records flushed into DuckDB (its WAL) but not yet checkpointed are still in the
    journal: losing the WAL loses nothing."""
    daemon = daemon_factory()
    sent = _send(daemon, make_batch(20, "flushed"))
    assert len(stored_span_ids(daemon)) == 20  # a query flushes them into DuckDB
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    [wal] = (daemon.home / "data").glob("[0-9]*.duckdb.wal")
    if damage == "deleted":
        wal.unlink()
    else:
        os.truncate(wal, wal.stat().st_size // 2)

    restarted = daemon_factory(home=daemon.home)
    assert sorted(stored_span_ids(restarted)) == sorted(sent)


def test_a_damaged_partition_is_set_aside_and_the_rest_served(daemon_factory: Any) -> None:
    """A partition file cut in half: the daemon starts, says which file it set aside and
    why, serves what the other partitions hold and goes on storing."""
    daemon = daemon_factory()
    kept = _send(daemon, make_batch(10, "kept"))
    assert daemon.stop() == 0
    data = daemon.home / "data"
    [good] = data.glob("[0-9]*.duckdb")
    broken = data / "20200101T000000Z.duckdb"  # an older partition
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    restarted = daemon_factory(home=daemon.home)
    assert sorted(stored_span_ids(restarted)) == sorted(kept)
    [damaged] = _storage(restarted)["damaged_partitions"]
    assert damaged["partition"] == broken.name and "cut short" in damaged["reason"]
    assert not broken.exists() and (data / "damaged" / broken.name).exists()
    more = _send(restarted, make_batch(3, "more"))
    assert sorted(stored_span_ids(restarted)) == sorted(kept + more)
    result = ophion("status", env={"OPHION_HOME": str(daemon.home)})
    assert "damaged partition" in result.stdout and broken.name in result.stdout

    # With the daemon down and nothing readable, `ophion sql` says so in one line.
    assert restarted.stop() == 0
    for partition in data.glob("[0-9]*.duckdb"):
        partition.write_bytes(partition.read_bytes()[:5000])
    result = ophion("sql", "SELECT count(*) FROM spans", env={"OPHION_HOME": str(daemon.home)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: no partition" in result.stderr


# ---------------------------------------------------------------------------------------------
# Requests DuckDB chokes on, sent live by the SDK


def _grpc_send(daemon: RunningDaemon, spans: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=daemon.grpc_endpoint, insecure=True, timeout=60)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def _sdk_spans(name: str, count: int, attributes: dict[str, Any]) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "poison-test"}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("ophion.tests")
    for _ in range(count):
        with tracer.start_as_current_span(name, attributes=attributes):
            pass
    spans = recorder.get_finished_spans()
    provider.shutdown()
    return spans


@pytest.mark.slow
def test_a_request_of_large_values_within_the_limits_is_stored(daemon_factory: Any) -> None:
    """300 spans with 60 kB attributes each (18 MB, every value within the limits): DuckDB at
    its 64 MB memory limit cannot take them in one INSERT, so the flush stores them in smaller
    ones. Nothing is dead-lettered, nothing waits."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    daemon = daemon_factory()
    spans = _sdk_spans("large", 300, {"blob": "y" * 60_000})
    assert _grpc_send(daemon, spans) == SpanExportResult.SUCCESS
    assert daemon.sql("SELECT count(*) AS n FROM spans WHERE name = 'large'") == [{"n": 300}]
    storage = _storage(daemon)
    assert storage["dead_letters"]["requests"] == 0 and not storage["failing"]


@pytest.mark.slow
def test_a_record_past_what_duckdb_can_hold_is_dead_lettered_and_ingest_goes_on(
    daemon_factory: Any,
) -> None:
    """With the value limits raised past what DuckDB can hold in its memory (one 16 MiB
    attribute), the span is acknowledged and then refused by DuckDB: it is set aside with the
    reason, the spans around it are stored, later exports are stored, and a restart works."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    daemon = daemon_factory(
        env={
            "OPHION_MAX_ATTRIBUTE_VALUE_SIZE": "32MiB",
            "OPHION_MAX_ATTRIBUTES_SIZE": "32MiB",
            "OPHION_MAX_REQUEST_SIZE": "64MiB",
        }
    )
    assert _grpc_send(daemon, _sdk_spans("before", 3, {})) == SpanExportResult.SUCCESS
    huge = _sdk_spans("huge", 1, {"blob": "z" * (16 << 20)})
    assert _grpc_send(daemon, huge) == SpanExportResult.SUCCESS  # acknowledged: journaled
    assert _grpc_send(daemon, _sdk_spans("after", 4, {})) == SpanExportResult.SUCCESS

    names = daemon.sql("SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name")
    assert names == [{"name": "after", "n": 4}, {"name": "before", "n": 3}]
    storage = _storage(daemon)
    assert not storage["failing"]
    dead = storage["dead_letters"]
    assert dead["requests"] == 1 and dead["records"] == {"traces": 1}
    assert "memory" in dead["last_reason"].lower()
    counts = daemon.status()["signals"]["traces"]
    assert (counts["accepted"], counts["stored"], counts["dead_lettered"]) == (8, 7, 1)

    assert _grpc_send(daemon, _sdk_spans("later", 2, {})) == SpanExportResult.SUCCESS
    assert daemon.sql("SELECT count(*) AS n FROM spans") == [{"n": 9}]
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    restarted = daemon_factory(home=daemon.home)  # (the default, lower, limits)
    assert restarted.sql("SELECT count(*) AS n FROM spans") == [{"n": 9}]
