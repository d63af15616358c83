"""A decoded request as bytes: each table an Arrow IPC stream, behind a small JSON header.

This is the format decode workers answer in and journal records (and dead letters) hold, so
the receivers and the store share it without importing each other. The streams are never
copied on the way: :func:`pack` returns buffers to ``writev`` and :func:`unpack` views.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

_HEADER_SIZE = struct.Struct("<I")
PREFIX_SIZE = _HEADER_SIZE.size  # the fewest bytes a packed request can have
_MAX_BUFFERS = 512  # per writev call (Linux allows 1024)


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


def packed_header(data: bytes | memoryview) -> bytes:
    """The JSON header of :func:`pack`'s output from its first bytes; ValueError when they do
    not hold all of it."""
    if len(data) < _HEADER_SIZE.size:
        raise ValueError("too short for a header")
    (size,) = _HEADER_SIZE.unpack_from(data)
    if _HEADER_SIZE.size + size > len(data):
        raise ValueError("the record's header is cut short")
    return bytes(data[_HEADER_SIZE.size : _HEADER_SIZE.size + size])
