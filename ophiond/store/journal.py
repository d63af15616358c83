"""The ingest journal: what makes an acknowledgement durable before DuckDB has the records.

DuckDB costs about three times as much CPU per span, and stores spans less compactly, when it
is fed one 1,000-span request per commit than when it gets row-group-sized inserts (about
120,000 rows). So the writer does not commit each request to DuckDB: it appends the request's
Arrow batches to this journal, ``fdatasync``\\s it, acknowledges, and inserts into DuckDB in
large chunks later (a *flush*). Appending a 400 kB request and syncing it costs about 0.2 ms
of CPU.

Layout: ``<data>/journal/<segment>.journal``, segments numbered upwards. A flush covers whole
segments: the writer rotates to a new segment when a flush starts, and the flush records the
last segment it covers in DuckDB (``journal_applied``) in the same transaction as the records,
so after a crash the journal is replayed from the first segment DuckDB does not have, exactly
once. Segments a flush covered are deleted after its commit.

Segment file: a 28-byte header (``OPHJRNL2``, the segment's number, how many records the
previous segment holds, a CRC of the header), then records. A record is ``<magic "\\xa7OPR">
<sequence u32> <payload length u32> <payload crc32 u32> <crc32 of the 16 bytes before it>
<payload>``; the payload is a small JSON header (signal, record count, table names and sizes)
followed by each table as an Arrow IPC stream. Records are numbered from 1 in each segment.

Damage is found and named, never silently skipped: a record whose head or payload does not
check out is skipped and the reader looks for the next record magic, so the records after the
damage are read again; the sequence numbers say how many records the damage took; and a
segment's header says how many records its predecessor holds, so a predecessor truncated at a
record boundary, or deleted, is noticed too. Bytes after the last whole record of the segment
being written when the daemon stopped are a write cut short (never acknowledged) or damage:
the reader cannot tell which, and says so. Segments written before this format (no header:
``<length u32><crc32 u32><payload>`` records) are still read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ophiond.batchio import (
    PREFIX_SIZE,
    decode_tables,
    pack,
    packed_header,
    unpack,
    write_all,
)
from ophiond.errors import StoreError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_SEGMENT_MAGIC = b"OPHJRNL2"
# magic, segment number, records in the previous segment (_UNKNOWN: not known), crc32 of the rest
_SEGMENT_HEAD = struct.Struct("<8sQQI")
_UNKNOWN = (1 << 64) - 1
_RECORD_MAGIC = b"\xa7OPR"
# magic, sequence in the segment (from 1), payload length, payload crc32, crc32 of these 16 bytes
_RECORD_HEAD = struct.Struct("<4sIIII")
_LEGACY_HEAD = struct.Struct("<II")  # segments before the format above: length, crc32
_NAME_RE = re.compile(r"^(\d{12})\.journal$")


@dataclass
class JournalRecord:
    """One accepted request as the journal keeps it."""

    signal: str
    records: int
    tables: dict[str, pa.Table]
    sequence: int  # its place in its segment, from 1
    streams: dict[str, memoryview]  # the tables' IPC streams, as stored (for a dead letter)


@dataclass
class SegmentContents:
    """What could be read of one segment, and what could not."""

    records: list[JournalRecord]
    previous: int | None  # records its predecessor holds, per its header (None: not known)
    last_sequence: int  # the sequence number of the last whole record (0: none)
    lost: int  # records missing between whole ones (damage found by the sequence numbers)
    damaged: list[str]  # where and what, for the log
    tail: int  # bytes after the last whole record
    torn: bool = False  # and they look like a write cut short, not like damage


@dataclass
class JournalLoss:
    """Acknowledged records the disk lost (or may have lost) before DuckDB had them."""

    segment: int
    requests: int | None  # export requests (journal records) lost; None: not known
    acknowledged: bool | None  # None: a write cut short by a crash, or damage; cannot tell
    reason: str

    def describe(self) -> str:
        count = "an unknown number of" if self.requests is None else str(self.requests)
        ack = {
            True: "acknowledged",
            False: "never acknowledged",
            None: "acknowledged or not",
        }[self.acknowledged]
        return (
            f"journal segment {self.segment:012d}: {count} request(s) lost ({ack}): {self.reason}"
        )


class Frame:
    """One journal record before it is written: its payload and the payload's CRC, computed
    outside the journal's lock; :meth:`Journal.append` adds the head with its sequence."""

    __slots__ = ("parts", "length", "crc")

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = parts
        self.length = sum(len(p) for p in parts)
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        self.crc = crc

    def head(self, sequence: int) -> bytes:
        start = struct.pack("<4sIII", _RECORD_MAGIC, sequence, self.length, self.crc)
        return start + struct.pack("<I", zlib.crc32(start))


def encode_record(signal: str, records: int, streams: Mapping[str, bytes | memoryview]) -> Frame:
    """One journal record's payload (the streams are not copied), ready to append."""
    return Frame(pack({"signal": signal, "records": records}, streams))


def sync_directory(directory: Path) -> None:
    """Make the names in ``directory`` durable (a file just created or renamed there)."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def single_record(data: bytes) -> memoryview:
    """The payload of a file holding one record (a dead letter); ValueError if it is damaged."""
    view = memoryview(data)
    if len(data) < _RECORD_HEAD.size:
        raise ValueError("too short")
    magic, _sequence, length, payload_crc, head_crc = _RECORD_HEAD.unpack_from(data)
    start = _RECORD_HEAD.size
    if (
        magic != _RECORD_MAGIC
        or zlib.crc32(view[: start - 4]) != head_crc
        or zlib.crc32(view[start : start + length]) != payload_crc
    ):
        raise ValueError("damaged record")
    return view[start : start + length]


def header_of(data: bytes) -> bytes:
    """The JSON header of the record at the start of ``data`` (its first bytes are enough);
    ValueError when they do not hold one."""
    if len(data) < _RECORD_HEAD.size + PREFIX_SIZE or data[:4] != _RECORD_MAGIC:
        raise ValueError("not a journal record")
    return packed_header(memoryview(data)[_RECORD_HEAD.size :])


def _decode_payload(payload: bytes | memoryview, sequence: int) -> JournalRecord:
    header, streams = unpack(payload)
    return JournalRecord(
        header.get("signal", ""), header["records"], decode_tables(streams), sequence, streams
    )


class Journal:
    """Append-only segments of accepted records; only the writer's threads use it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        self.segment = 0  # the segment being appended to (0: none yet)
        self.appended = 0  # records in it (the last sequence number given)

    def segments(self) -> list[int]:
        """Numbers of the segments on disk, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _NAME_RE.match(n)))

    def path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.journal"

    def open(self, after: int, previous: int | None = None) -> None:
        """Start appending to a new segment numbered above every existing one and ``after``;
        ``previous`` is how many records the segment before it holds, when known."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._start(max([after, *existing]) + 1, previous)

    def _start(self, segment: int, previous: int | None) -> None:
        """Create segment ``segment`` (its header written and synced) and append to it from
        now on. Either all of that happens or nothing does: records must never go to a file
        whose number the writer does not know, nor to one whose name a crash could lose."""
        path = self.path(segment)
        fd = None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            start = struct.pack(
                "<8sQQ", _SEGMENT_MAGIC, segment, _UNKNOWN if previous is None else previous
            )
            write_all(fd, [start, struct.pack("<I", zlib.crc32(start))])
            os.fdatasync(fd)
            sync_directory(self.directory)
        except OSError as e:
            if fd is not None:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
            raise StoreError(f"cannot create journal segment {path}: {e}") from e
        self._fd, self.segment, self.appended = fd, segment, 0

    def append(self, frames: list[Frame]) -> None:
        """Write records and make them durable; raise :class:`StoreError` if not.

        A write that fails half-way is cut off again, so that the records appended after it
        are not hidden behind a torn one; if even that fails, the next append starts a new
        segment.
        """
        if self._fd is None:  # not opened yet, or a rotation failed half-way: a new segment
            self._start(self.segment + 1, self.appended if self.segment else None)
        fd = self._fd
        assert fd is not None
        try:
            size = os.fstat(fd).st_size
        except OSError as e:
            raise StoreError(f"cannot write the journal: {e}") from e
        parts: list[bytes | memoryview] = []
        for sequence, frame in enumerate(frames, self.appended + 1):
            parts.append(frame.head(sequence))
            parts.extend(frame.parts)
        try:
            write_all(fd, parts)
            os.fdatasync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                self.close()
            raise StoreError(f"cannot write the journal: {e}") from e
        self.appended += len(frames)

    def rotate(self) -> int:
        """Close the current segment and start the next; return the closed segment's number."""
        closed = self.segment
        self.close()
        self._start(closed + 1, self.appended)
        return closed

    def discard_through(self, segment: int) -> None:
        """Delete the segments up to ``segment``: DuckDB has their records durably."""
        for number in self.segments():
            if number <= segment and number != self.segment:
                try:
                    self.path(number).unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:  # harmless: DuckDB records it as stored, replay skips it
                    log.warning("cannot delete journal segment %s: %s", number, e)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as e:  # its records were synced; nothing is lost
                log.warning("closing journal segment %s: %s", self.segment, e)

    def replay(self, after: int) -> Iterator[tuple[int, SegmentContents]]:
        """Every segment numbered above ``after``, in order, with what could be read of it.
        Losses are found by :func:`find_losses`."""
        for number in self.segments():
            if number > after:
                yield number, read_segment(self.path(number))


def find_losses(after: int, segments: list[tuple[int, SegmentContents]]) -> list[JournalLoss]:
    """What the journal lost after segment ``after`` (the last one DuckDB has), from
    ``segments`` (as :meth:`Journal.replay` gives them): records damaged inside a segment,
    a segment cut short or missing (its successor's header says how many records it held),
    and segment ``after + 1``, which the daemon was writing to when DuckDB took ``after``'s
    records (so it exists, if only empty), missing."""
    found = dict(segments)
    numbers = sorted(found)
    if not numbers:
        if not after:
            return []  # (a new store: nothing was ever written)
        return [
            JournalLoss(
                after + 1,
                None,
                True,
                "the segment being written is missing (records acknowledged since the last "
                "flush are lost, if there were any)",
            )
        ]
    losses = []
    missing_from = None
    for number in range(after + 1, numbers[-1] + 1):
        if number not in found:
            missing_from = missing_from or number
        elif missing_from is not None:
            losses.append(_missing(missing_from, number - 1, found[number].previous))
            missing_from = None
    for number in numbers:
        contents = found[number]
        successor = found.get(number + 1)
        expected = successor.previous if successor is not None else None
        if contents.lost:
            losses.append(JournalLoss(number, contents.lost, True, "; ".join(contents.damaged)))
        if expected is not None and expected > contents.last_sequence:
            losses.append(
                JournalLoss(
                    number,
                    expected - contents.last_sequence,
                    True,
                    f"the segment ends after record {contents.last_sequence} of {expected}"
                    + (f" and {contents.tail} bytes are damaged" if contents.tail else ""),
                )
            )
        elif contents.tail and number != numbers[-1]:
            losses.append(
                JournalLoss(
                    number, None, True, f"{contents.tail} bytes after its last whole record"
                )
            )
        elif contents.tail and not contents.torn:
            losses.append(
                JournalLoss(
                    number,
                    None,
                    None,
                    f"{contents.tail} bytes after its last whole record are damaged",
                )
            )
    return sorted(losses, key=lambda loss: loss.segment)


def _missing(first: int, last: int, before_next: int | None) -> JournalLoss:
    """Segments ``first`` to ``last`` are gone; the next one's header counts ``last``'s
    records (so the count is known when only one is missing)."""
    if first == last:
        return JournalLoss(first, before_next, True, "the segment file is missing")
    return JournalLoss(first, None, True, f"segments {first:012d} to {last:012d} are missing")


def unstored_bytes(data_dir: Path, applied: int = 0) -> int:
    """Bytes in the journal of ``data_dir`` after segment ``applied``: records a daemon
    acknowledged and had not yet put into the partition files when it stopped uncleanly
    (stored when it starts again)."""
    journal = Journal(data_dir / "journal")
    total = 0
    for number in journal.segments():
        if number > applied:
            with contextlib.suppress(OSError):
                total += max(0, journal.path(number).stat().st_size - _SEGMENT_HEAD.size)
    return total


def read_segment(path: Path) -> SegmentContents:
    """Every whole record of one segment, going on past damage, and what was lost."""
    data = path.read_bytes()
    if data.startswith(_SEGMENT_MAGIC) or not _legacy(data):
        # (a damaged header included: the records after it are found by their magic)
        return _read_records(data)
    return _read_legacy(path.name, data)


def _legacy(data: bytes) -> bool:
    """Whether ``data`` starts with a whole record of the old format (no segment header)."""
    if len(data) < _LEGACY_HEAD.size:
        return False
    length, crc = _LEGACY_HEAD.unpack_from(data)
    payload = memoryview(data)[_LEGACY_HEAD.size : _LEGACY_HEAD.size + length]
    return bool(length >= PREFIX_SIZE and len(payload) == length and zlib.crc32(payload) == crc)


def _read_records(data: bytes) -> SegmentContents:
    from pyarrow import ArrowException as ArrowError

    view = memoryview(data)  # (the tables point into ``data``: no copies)
    damaged = []
    previous = _UNKNOWN
    offset = 0
    if len(data) >= _SEGMENT_HEAD.size:
        magic, _number, previous, crc = _SEGMENT_HEAD.unpack_from(data)
        if magic == _SEGMENT_MAGIC and zlib.crc32(view[: _SEGMENT_HEAD.size - 4]) == crc:
            offset = _SEGMENT_HEAD.size
    if not offset:
        damaged.append("its header is damaged")
        previous = _UNKNOWN
    records: list[JournalRecord] = []
    lost = 0
    last = 0
    end_of_whole = offset
    skipping_from: int | None = None
    while offset + _RECORD_HEAD.size <= len(data):
        record = None
        magic, sequence, length, payload_crc, head_crc = _RECORD_HEAD.unpack_from(data, offset)
        start = offset + _RECORD_HEAD.size
        if (
            magic == _RECORD_MAGIC
            and zlib.crc32(view[offset : start - 4]) == head_crc
            and start + length <= len(data)
            and zlib.crc32(view[start : start + length]) == payload_crc
        ):
            try:
                record = _decode_payload(view[start : start + length], sequence)
            except (ValueError, KeyError, TypeError, struct.error, ArrowError) as e:
                damaged.append(f"record {sequence} at byte {offset} cannot be read: {e}")
        if record is None:
            if skipping_from is None:
                skipping_from = offset
            following = data.find(_RECORD_MAGIC, offset + 1)
            if following < 0:
                break
            offset = following
            continue
        if skipping_from is not None:
            damaged.append(f"bytes {skipping_from} to {offset} are damaged")
            skipping_from = None
        if sequence > last + 1:
            lost += sequence - last - 1
        last = max(last, sequence)
        records.append(record)
        offset = end_of_whole = start + length
    return SegmentContents(
        records,
        None if previous == _UNKNOWN else previous,
        last,
        lost,
        damaged,
        len(data) - end_of_whole,
        _torn(data, end_of_whole),
    )


def _torn(data: bytes, offset: int) -> bool:
    """Whether the bytes after ``offset`` look like a write a crash cut short (a record's head
    and a part of its payload, or zeros a power loss left), rather than damage."""
    tail = data[offset:]
    if len(tail) < _RECORD_HEAD.size:
        return not tail.strip(b"\0") or _RECORD_MAGIC.startswith(tail[:4])
    if not tail.strip(b"\0"):
        return True
    magic, _sequence, length, _crc, head_crc = _RECORD_HEAD.unpack_from(tail)
    head_ok = magic == _RECORD_MAGIC and zlib.crc32(tail[: _RECORD_HEAD.size - 4]) == head_crc
    return bool(head_ok and _RECORD_HEAD.size + length > len(tail))


def _read_legacy(name: str, data: bytes) -> SegmentContents:
    """A segment of the old format: records until the first that does not check out."""
    from pyarrow import ArrowException as ArrowError

    view = memoryview(data)
    records: list[JournalRecord] = []
    offset = 0
    while len(data) - offset >= _LEGACY_HEAD.size:
        length, crc = _LEGACY_HEAD.unpack_from(data, offset)
        start = offset + _LEGACY_HEAD.size
        payload = view[start : start + length]
        # (a tail of zeros, which a power loss can leave, reads as an empty record: not one)
        if length < PREFIX_SIZE or len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            records.append(_decode_payload(payload, len(records) + 1))
        except (ValueError, KeyError, TypeError, struct.error, ArrowError) as e:
            log.warning("journal %s: a record at byte %d cannot be read: %s", name, offset, e)
            break
        offset = start + length
    tail = len(data) - offset
    # (old segments were never checked for damage: a tail there reads as a write cut short)
    return SegmentContents(records, None, 0, 0, [], tail, torn=True)
