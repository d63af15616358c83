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

A record is ``<length u32><crc32 u32><payload>``; the payload is a small JSON header (signal,
record count, table names and sizes) followed by each table as an Arrow IPC stream. A torn
record at the end of a segment (a crash during a write, never acknowledged) ends the replay of
that segment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ophiond.errors import StoreError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_RECORD_HEAD = struct.Struct("<II")  # payload length, crc32 of the payload
_HEADER_SIZE = struct.Struct("<I")
_MAX_BUFFERS = 512  # per writev call (Linux allows 1024)
_NAME_RE = re.compile(r"^(\d{12})\.journal$")


@dataclass
class JournalRecord:
    """One accepted request as the journal keeps it."""

    records: int
    tables: dict[str, pa.Table]


def encode_tables(tables: Mapping[str, pa.Table]) -> dict[str, bytes]:
    """Each table as an Arrow IPC stream (what decode workers send and the journal stores)."""
    import pyarrow as pa

    out = {}
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as stream:
            stream.write_table(table)
        out[name] = sink.getvalue().to_pybytes()
    return out


def decode_tables(streams: Mapping[str, bytes | memoryview]) -> dict[str, pa.Table]:
    """The tables back from their IPC streams (zero-copy: the tables share the bytes)."""
    import pyarrow as pa

    return {name: pa.ipc.open_stream(pa.py_buffer(d)).read_all() for name, d in streams.items()}


class LazyTables(Mapping[str, "pa.Table"]):
    """Tables from IPC streams, each decoded when first asked for: a receiver hands a worker's
    streams to the journal as they are, and only the live log feed looks at a table."""

    def __init__(self, streams: Mapping[str, bytes | memoryview]) -> None:
        self._streams = streams
        self._tables: dict[str, pa.Table] = {}

    def __getitem__(self, name: str) -> pa.Table:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = decode_tables({name: self._streams[name]})[name]
        return table

    def __iter__(self) -> Iterator[str]:
        return iter(self._streams)

    def __len__(self) -> int:
        return len(self._streams)


def pack(
    header: dict[str, Any], streams: Mapping[str, bytes | memoryview]
) -> list[bytes | memoryview]:
    """A JSON header (listing each stream's name and length) followed by the streams: the
    format of journal records and of decode workers' answers, as buffers to write (the streams
    are not copied)."""
    head = json.dumps({**header, "tables": [[n, len(d)] for n, d in streams.items()]}).encode()
    return [_HEADER_SIZE.pack(len(head)), head, *streams.values()]


def unpack(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], dict[str, memoryview]]:
    """The header and the streams (views into ``data``, not copies) of :func:`pack`'s output."""
    view = memoryview(data)
    (size,) = _HEADER_SIZE.unpack_from(view)
    offset = _HEADER_SIZE.size + size
    header = json.loads(bytes(view[_HEADER_SIZE.size : offset]))
    streams = {}
    for name, length in header.pop("tables"):
        streams[name] = view[offset : offset + length]
        offset += length
    return header, streams


def encode_record(
    signal: str, records: int, streams: Mapping[str, bytes | memoryview]
) -> list[bytes | memoryview]:
    """One journal record, framed, as the buffers to write (the streams are not copied)."""
    parts = pack({"signal": signal, "records": records}, streams)
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [_RECORD_HEAD.pack(sum(len(p) for p in parts), crc), *parts]


def write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """``writev`` every buffer, going on after short writes."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:_MAX_BUFFERS])
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


def _decode_payload(payload: bytes | memoryview) -> JournalRecord:
    header, streams = unpack(payload)
    return JournalRecord(header["records"], decode_tables(streams))


class Journal:
    """Append-only segments of accepted records; only the writer's threads use it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        self.segment = 0  # the segment being appended to (0: none yet)

    def segments(self) -> list[int]:
        """Numbers of the segments on disk, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _NAME_RE.match(n)))

    def path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.journal"

    def open(self, after: int) -> None:
        """Start appending to a new segment numbered above every existing one and ``after``."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._start(max([after, *existing]) + 1)

    def _start(self, segment: int) -> None:
        """Create segment ``segment`` and append to it from now on. Either all of that happens
        or nothing does: records must never go to a file whose number the writer does not
        know, nor to one whose name a crash could lose."""
        path = self.path(segment)
        fd = None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            if fd is not None:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
            raise StoreError(f"cannot create journal segment {path}: {e}") from e
        self._fd, self.segment = fd, segment

    def append(self, records: list[list[bytes | memoryview]]) -> None:
        """Write framed records and make them durable; raise :class:`StoreError` if not.

        A write that fails half-way is cut off again, so that the records appended after it
        are not hidden behind a torn one; if even that fails, the next append starts a new
        segment.
        """
        if self._fd is None:  # not opened yet, or a rotation failed half-way: a new segment
            self._start(self.segment + 1)
        fd = self._fd
        assert fd is not None
        try:
            size = os.fstat(fd).st_size
        except OSError as e:
            raise StoreError(f"cannot write the journal: {e}") from e
        try:
            write_all(fd, [part for record in records for part in record])
            os.fdatasync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                self.close()
            raise StoreError(f"cannot write the journal: {e}") from e

    def rotate(self) -> int:
        """Close the current segment and start the next; return the closed segment's number."""
        closed = self.segment
        self.close()
        self._start(closed + 1)
        return closed

    def discard_through(self, segment: int) -> None:
        """Delete the segments up to ``segment``: DuckDB has their records."""
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

    def replay(self, after: int) -> Iterator[tuple[int, JournalRecord]]:
        """The records of every segment numbered above ``after``, in order, with their segment."""
        for number in self.segments():
            if number > after:
                for record in read_segment(self.path(number)):
                    yield number, record


def unstored_bytes(data_dir: Path) -> int:
    """Bytes in the journal of ``data_dir``: records a daemon acknowledged and had not yet put
    into the partition files when it stopped uncleanly (stored when it starts again)."""
    journal = Journal(data_dir / "journal")
    return sum(journal.path(n).stat().st_size for n in journal.segments())


def read_segment(path: Path) -> Iterator[JournalRecord]:
    """The whole records of one segment; a torn or corrupt tail ends it (with a warning)."""
    from pyarrow import ArrowException as ArrowError

    data = path.read_bytes()
    view = memoryview(data)  # (the tables point into ``data``: no copies)
    offset = 0
    while offset < len(data):
        if len(data) - offset < _RECORD_HEAD.size:
            break
        length, crc = _RECORD_HEAD.unpack_from(data, offset)
        start = offset + _RECORD_HEAD.size
        payload = view[start : start + length]
        # (a tail of zeros, which a power loss can leave, reads as an empty record: not one)
        if length < _HEADER_SIZE.size or len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            record = _decode_payload(payload)
        except (ValueError, KeyError, TypeError, struct.error, ArrowError) as e:
            log.warning("journal %s: a record at byte %d cannot be read: %s", path.name, offset, e)
            break
        yield record
        offset = start + length
    if offset < len(data):
        log.warning(
            "journal %s: %d bytes after the last whole record ignored (a write cut short; "
            "such a record was never acknowledged)",
            path.name,
            len(data) - offset,
        )
