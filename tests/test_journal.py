"""The ingest journal: acknowledged records are on disk before DuckDB has them, and come back
exactly once after a crash. The daemon-level proof (SIGKILL) is in test_durability.py."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from test_store import T0, _open, _trace_request

from ophiond.batchio import encode_tables
from ophiond.errors import StoreError
from ophiond.otlp.decode import decode_traces
from ophiond.store.journal import (
    Frame,
    Journal,
    encode_record,
    find_losses,
    read_segment,
)
from ophiond.store.partitions import PartitionSet
from ophiond.store.writer import Writer
from ophiond.telemetry import Telemetry


def _writer(partitions: PartitionSet, **kwargs: object) -> Writer:
    return Writer(partitions, Telemetry(), 1_000_000, 10**12, 7 * 86400, **kwargs)  # type: ignore[arg-type]


def _frame(spans: int, service: str = "checkout") -> Frame:
    batch = decode_traces(_trace_request(spans, service))
    return encode_record("traces", batch.accepted, encode_tables(batch.tables))


def _counts(path: Path) -> list[int]:
    return [r.records for r in read_segment(path).records]


def _span_count(partitions: PartitionSet) -> int:
    row = partitions.con.execute("SELECT count(*) FROM spans").fetchone()
    assert row is not None
    return int(row[0])


def test_a_torn_last_record_is_ignored_and_the_whole_ones_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open(after=0)
    journal.append([_frame(3), _frame(4)])
    journal.close()
    path = journal.path(journal.segment)
    whole = path.read_bytes()
    frame = _frame(5)
    torn = (frame.head(3) + b"".join(frame.parts))[:-10]
    path.write_bytes(whole + torn)  # a crash in the middle of the third write
    assert _counts(path) == [3, 4]
    # The newest segment's torn tail is a write cut short, not a loss to report.
    assert find_losses(0, [(journal.segment, read_segment(path))]) == []
    path.write_bytes(whole[:-1])  # or of the second
    assert _counts(path) == [3]


def test_unflushed_records_are_replayed_once_at_start(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    # What a daemon killed before its flush leaves: records in the journal, none in DuckDB.
    journal = Journal(tmp_path / "journal")
    journal.open(after=0)
    journal.append([_frame(3, "a"), _frame(4, "b")])
    journal.close()

    writer = _writer(partitions)
    assert writer.recover() == 7
    assert _span_count(partitions) == 7
    assert Journal(tmp_path / "journal").segments() == [writer.journal.segment]
    writer.journal.close()

    # Starting again replays nothing more.
    assert _writer(partitions).recover() == 0
    assert _span_count(partitions) == 7
    partitions.close()


def test_a_segment_duckdb_already_has_is_not_replayed(tmp_path: Path) -> None:
    """A crash between the flush's commit and the deletion of its segment."""
    partitions = _open(tmp_path)
    writer = _writer(partitions)
    writer.start()
    writer.submit(decode_traces(_trace_request(5))).wait()
    segment = writer.journal.segment
    kept = writer.journal.path(segment).read_bytes()
    writer.sync()  # flushed: DuckDB records the segment as applied
    assert writer.journal.path(segment).exists()  # kept until a checkpoint
    writer.stop()  # which the stop makes: only now is it deleted
    assert not writer.journal.path(segment).exists()
    writer.journal.path(segment).write_bytes(kept)  # as if the deletion never happened

    assert _writer(partitions).recover() == 0
    assert _span_count(partitions) == 5
    partitions.close()


def test_acknowledged_records_wait_in_the_journal_until_a_reader_asks(tmp_path: Path) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_interval=3600.0)
    partitions.before_read = writer.sync
    writer.start()
    writer.submit(decode_traces(_trace_request(6))).wait()
    assert writer.depth == 6  # acknowledged, not yet in DuckDB
    assert partitions.con.cursor().execute("SELECT count(*) FROM raw_spans").fetchone() == (0,)
    from ophiond.store.query import run_query

    assert run_query(partitions, "SELECT count(*) FROM spans", 10, 5.0).rows == [[6]]
    assert writer.depth == 0
    writer.stop()
    partitions.close()


def test_a_failed_flush_keeps_the_records_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions)
    real_insert = writer.inserter.insert
    failures = [0]

    def flaky_insert(batches: object, segment: int) -> None:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("disk full (simulated)", transient=True)
        real_insert(batches, segment)  # type: ignore[arg-type]

    monkeypatch.setattr(writer.inserter, "insert", flaky_insert)
    writer.start()
    failures[0] = 1
    writer.submit(decode_traces(_trace_request(4))).wait()
    writer.sync()  # returns after the failed attempt; the reader sees what is there
    assert _span_count(partitions) == 0 and writer.depth == 4
    writer.sync()  # the retry, a second later
    assert _span_count(partitions) == 4 and writer.depth == 0
    writer.stop()
    partitions.close()


def test_a_tail_of_zeros_ends_the_segment(tmp_path: Path) -> None:
    """What a power loss can leave after an unacknowledged write: it reads as no record."""
    journal = Journal(tmp_path)
    journal.open(after=0)
    journal.append([_frame(3)])
    journal.close()
    path = journal.path(journal.segment)
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    assert _counts(path) == [3]
    assert find_losses(0, [(journal.segment, read_segment(path))]) == []


def test_a_rotation_that_fails_half_way_stores_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new segment's directory entry cannot be synced: no record may go to that file."""
    from ophiond.store import journal as journal_module

    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_records=5, flush_interval=3600.0)
    writer.start()
    real_open = os.open
    fail = [True]

    def flaky_open(path: Any, flags: int, *args: Any) -> int:
        if fail[0] and flags == os.O_RDONLY and Path(path) == writer.journal.directory:
            fail[0] = False
            raise OSError(24, "Too many open files")
        return real_open(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", flaky_open)
    writer.submit(decode_traces(_trace_request(5, "a"))).wait()  # a full chunk: rotation fails
    writer.submit(decode_traces(_trace_request(2, "b"))).wait()
    writer.sync()
    writer.submit(decode_traces(_trace_request(1, "c"))).wait()  # acknowledged, not flushed
    # A crash now: the writer is abandoned and a new one recovers from the journal.
    assert _writer(partitions).recover() == 1
    assert _span_count(partitions) == 8
    partitions.close()


def test_a_journal_error_during_rotation_never_leaves_a_request_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_records=5, flush_interval=3600.0)
    real_close = os.close
    journal_fds: list[int] = []

    def failing_close(fd: int) -> None:
        real_close(fd)
        if fd in journal_fds:
            raise OSError(5, "Input/output error")

    writer.start()
    journal_fds.append(writer.journal._fd)  # type: ignore[arg-type]
    from ophiond.store import journal as journal_module

    monkeypatch.setattr(journal_module.os, "close", failing_close)
    pending = writer.submit(decode_traces(_trace_request(5)))
    assert pending._done.wait(10), "the request was left waiting"
    pending.wait()  # and answered with success: its records were synced
    monkeypatch.undo()
    writer.stop()
    assert _span_count(partitions) == 5
    partitions.close()


def test_a_trace_split_over_partitions_keeps_its_events_and_links(tmp_path: Path) -> None:
    """A trace's events and links are looked up only in the partitions that hold its spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from ophiond.store.queries import Queries

    trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")

    def request(span: int, parent: int | None) -> ExportTraceServiceRequest:
        message = ExportTraceServiceRequest()
        resource_spans = message.resource_spans.add()
        attr = resource_spans.resource.attributes.add()
        attr.key, attr.value.string_value = "service.name", f"svc{span}"
        s = resource_spans.scope_spans.add().spans.add()
        s.trace_id, s.span_id = trace_id, span.to_bytes(8, "big")
        if parent is not None:
            s.parent_span_id = parent.to_bytes(8, "big")
        s.name, s.start_time_unix_nano, s.end_time_unix_nano = f"op{span}", 1_000 * span, 10_000
        event = s.events.add()
        event.name, event.time_unix_nano = f"event{span}", 1_000 * span + 1
        link = s.links.add()
        link.trace_id, link.span_id = bytes(15) + bytes([span]), span.to_bytes(8, "big")
        return message

    partitions = _open(tmp_path)
    # The writer's clock follows the days the test rolls over to: on today's date, its
    # housekeeping after each flush would delete these partitions as past the 7-day age.
    clock = [T0]
    writer = _writer(partitions, clock=lambda: clock[0])
    partitions.before_read = writer.sync
    writer.start()
    writer.submit(decode_traces(request(1, None))).wait()
    writer.sync()
    clock[0] = T0 + dt.timedelta(days=1)
    partitions.roll_over_if_due(clock[0], 10**12, 30 * 86400)
    writer.submit(decode_traces(request(2, 1))).wait()
    # A partition the trace is not in, created after it.
    clock[0] = T0 + dt.timedelta(days=2)
    partitions.roll_over_if_due(clock[0], 10**12, 30 * 86400)
    trace = Queries(partitions, 30.0).trace(trace_id.hex())
    writer.stop()
    assert [s["name"] for s in trace["spans"]] == ["op1", "op2"]
    assert [[e["name"] for e in s["events"]] for s in trace["spans"]] == [["event1"], ["event2"]]
    assert [len(s["links"]) for s in trace["spans"]] == [1, 1]
    assert len(partitions.partitions) >= 3  # (the writer's housekeeping may roll over too)
    partitions.close()


def test_a_flush_reads_its_records_back_from_the_journal_and_reports_any_lost_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records wait for their flush on disk, not in memory; if the disk loses one meanwhile,
    the readable ones are stored and the loss is logged, not retried forever."""
    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_interval=3600.0)
    writer.start()
    writer.submit(decode_traces(_trace_request(3))).wait()
    writer.submit(decode_traces(_trace_request(4))).wait()
    path = writer.journal.path(writer.journal.segment)
    path.write_bytes(path.read_bytes()[:-5])  # the second record damaged after its ack
    writer.sync()
    assert _span_count(partitions) == 3 and writer.depth == 0
    assert "lost 1 of its 2 requests" in caplog.text
    writer.stop()
    partitions.close()


def test_a_flush_ends_before_it_would_pass_its_size(tmp_path: Path) -> None:
    """Flushes of a little less than whole row groups, never a little more (which leaves small
    row groups that DuckDB rewrites at checkpoints)."""
    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_records=10, flush_interval=3600.0)
    partitions.before_read = writer.sync
    writer.start()
    for _ in range(6):
        writer.submit(decode_traces(_trace_request(4))).wait()  # one group each
    writer.sync()
    sizes = partitions.con.execute(
        "SELECT count(*) FROM raw_spans GROUP BY flush ORDER BY flush"
    ).fetchall()
    assert [row[0] for row in sizes] == [8, 8, 8]
    writer.stop()
    partitions.close()


def _journal_with(tmp_path: Path, *segments: list[int]) -> Journal:
    """A journal of closed segments (each rotated away) holding requests of these sizes."""
    journal = Journal(tmp_path / "journal")
    journal.open(after=0)
    for sizes in segments:
        journal.append([_frame(n) for n in sizes])
        journal.rotate()
    journal.close()
    return journal


def test_records_after_damage_are_found_again_and_the_loss_is_counted(tmp_path: Path) -> None:
    """16 bytes overwritten inside a record: that record is lost (and said to be), the ones
    after it are read again."""
    journal = _journal_with(tmp_path, [3, 4, 5, 6])
    first = journal.segments()[0]
    path = journal.path(first)
    data = bytearray(path.read_bytes())
    second = data.find(b"\xa7OPR", data.find(b"\xa7OPR") + 1)
    data[second + 40 : second + 56] = b"\xff" * 16
    path.write_bytes(bytes(data))

    contents = read_segment(path)
    assert [r.records for r in contents.records] == [3, 5, 6]
    assert contents.lost == 1
    [loss] = find_losses(0, list(journal.replay(after=0)))
    assert (loss.segment, loss.requests, loss.acknowledged) == (first, 1, True)
    assert "damaged" in loss.describe()


def test_a_segment_cut_short_or_deleted_is_noticed(tmp_path: Path) -> None:
    """A closed segment cut at a record boundary, or gone: its successor's header says how
    many records it held."""
    journal = _journal_with(tmp_path, [3, 4], [5], [6, 7])
    first, second, third, _open_one = journal.segments()
    path = journal.path(first)
    whole = read_segment(path)
    data = path.read_bytes()
    path.write_bytes(data[: data.rfind(b"\xa7OPR")])  # the last record cut off, cleanly
    journal.path(third).unlink()

    losses = find_losses(0, list(journal.replay(after=0)))
    assert [(x.segment, x.requests, x.acknowledged) for x in losses] == [
        (first, 1, True),
        (third, 2, True),
    ]
    assert whole.last_sequence == 2 and "missing" in losses[1].reason


def test_the_segment_being_written_going_missing_is_noticed(tmp_path: Path) -> None:
    """DuckDB has everything up to segment 4; 5, which the daemon was writing to, is gone."""
    [loss] = find_losses(4, [])
    assert loss.segment == 5 and loss.acknowledged and "missing" in loss.reason
    assert find_losses(0, []) == []  # (a new journal: nothing was ever written)


def test_a_request_duckdb_refuses_is_dead_lettered_and_storage_goes_on(tmp_path: Path) -> None:
    """One poisoned request among good ones: the flush stores the good ones, sets the bad one
    aside with DuckDB's reason, and the next flushes work; nothing waits for ever."""
    import dataclasses

    import pyarrow as pa

    partitions = _open(tmp_path)
    writer = _writer(partitions, flush_interval=3600.0)
    partitions.before_read = writer.sync
    writer.start()
    good = decode_traces(_trace_request(3, "good"))
    spans = good.tables["spans"]
    bad_column = pa.array(["not a number"] * spans.num_rows)
    poison = dataclasses.replace(
        good,
        tables={
            **good.tables,
            "spans": spans.set_column(
                spans.schema.get_field_index("duration_ns"), "duration_ns", bad_column
            ),
        },
    )
    for batch in (good, poison, decode_traces(_trace_request(4, "after"))):
        writer.submit(batch).wait()  # all three acknowledged
    writer.sync()
    assert _span_count(partitions) == 7 and writer.depth == 0
    assert writer.storage_error is None
    summary = writer.dead_letters.summary()
    assert summary["requests"] == 1 and summary["records"] == {"traces": 3}
    counts = writer.telemetry.snapshot()["traces"]
    assert (counts["accepted"], counts["stored"], counts["dead_lettered"], counts["waiting"]) == (
        10,
        7,
        3,
        0,
    )
    writer.submit(decode_traces(_trace_request(2, "later"))).wait()
    writer.sync()
    assert _span_count(partitions) == 9
    writer.stop()
    partitions.close()
