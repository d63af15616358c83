"""How much of one record ingest keeps, and how a value past a limit is cut.

A single oversized value is not the client's error and must not cost the rest of its request,
yet DuckDB cannot be handed one: a 16 MiB string fails every insert at its 64 MB memory limit,
and a flush that keeps failing holds up everything acknowledged after it. So the decoder
stores such a value cut, with a marker a reader cannot miss (``…[truncated 16711936 bytes]``),
drops what is past a count limit as the OpenTelemetry SDKs do (and counts it in the record's
``dropped_*_count``), and tells the client in ``partial_success``. The limits are settings
(:class:`IngestLimits`, see docs/ingest.md); only the nesting depth is fixed, because the
protobuf parser's own depth limit caps it anyway.

The decoder checks sizes on the JSON text it builds for each record anyway (one ``len`` per
attribute list), so records within the limits pay nothing per value. The other strings (a span's
name, a status message, a metric's unit...) are checked once the request's Arrow tables are
built, a column at a time (:func:`cut_long_strings`), not field by field. This module holds
that check and the parts that only run for records past a limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# Arrays and kvlists inside one another, at most; a deeper one is stored as NESTED_MARKER.
# Real attribute values nest a few levels; protobuf's parser refuses a whole request from
# about 30 kvlist levels (its depth limit of 100 messages), and this stays well inside that.
MAX_NESTING = 16
NESTED_MARKER = f"…[truncated: nested deeper than {MAX_NESTING} levels]"


def truncation_marker(cut: int) -> str:
    """What ends a value that was cut by ``cut`` bytes."""
    return f"…[truncated {cut} bytes]"


def cut_text(text: str, limit: int) -> str | None:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marker included, at a character
    boundary; ``None`` when it fits as it is."""
    data = text.encode()
    if len(data) <= limit:
        return None
    # The marker's length depends on the count it shows: reserve room for the longest count
    # possible, then show the real one (never longer).
    keep = max(limit - len(truncation_marker(len(data)).encode()), 0)
    kept = data[:keep].decode(errors="ignore")  # drops a character cut in half
    return kept + truncation_marker(len(data) - len(kept.encode()))


def cut_bytes(raw: bytes, limit: int) -> str | None:
    """A bytes value past ``limit`` bytes as its stored form, base64 text, of the bytes kept
    followed by the marker; ``None`` when it fits."""
    import base64

    if len(raw) <= limit:
        return None
    keep = max(limit - len(truncation_marker(len(raw)).encode()), 0)
    return base64.b64encode(raw[:keep]).decode() + truncation_marker(len(raw) - keep)


def cut_long_strings(column: pa.ChunkedArray, limit: int) -> tuple[pa.ChunkedArray, int] | None:
    """``column`` (strings, or a dictionary of strings) with each value past ``limit`` UTF-8
    bytes cut as :func:`cut_text` cuts it, and the number of records changed; ``None`` when
    every value fits.

    A column whose buffers hold at most ``limit`` bytes in all cannot hold a longer value, so
    nearly every column is answered without a pass over it; the others take one C pass (the
    longest value), and only a column with a value past the limit is rebuilt.
    """
    if column.get_total_buffer_size() <= limit:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks: list[pa.Array] = []
    changed = 0
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            # A run's value is one dictionary entry, however many records repeat it.
            cut = _cut_values(chunk.dictionary, limit)
            if cut is not None:
                dictionary, long = cut
                changed += pc.sum(pc.take(long, chunk.indices)).as_py() or 0
                chunk = pa.DictionaryArray.from_arrays(chunk.indices, dictionary)
        else:
            cut = _cut_values(chunk, limit)
            if cut is not None:
                chunk, long = cut
                changed += pc.sum(long).as_py() or 0
        chunks.append(chunk)
    return (pa.chunked_array(chunks, column.type), changed) if changed else None


def _cut_values(values: pa.Array, limit: int) -> tuple[pa.Array, pa.Array] | None:
    """(``values`` with the strings past ``limit`` bytes cut, which ones were) or ``None``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.binary_length(values)
    longest = pc.max(lengths).as_py()
    if longest is None or longest <= limit:
        return None
    long = pc.fill_null(pc.greater(lengths, limit), False)
    cut = [cut_text(values[int(i)].as_py(), limit) for i in pc.indices_nonzero(long).to_pylist()]
    return pc.replace_with_mask(values, long, pa.array(cut, values.type)), long


# ---------------------------------------------------------------------------------------------
# Protobuf bodies nested past the parser's depth limit

_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
_CONTAINERS = frozenset(
    {"opentelemetry.proto.common.v1.ArrayValue", "opentelemetry.proto.common.v1.KeyValueList"}
)


class _Malformed(Exception):
    """Not protobuf this module can walk; the parser's own error is the one to report."""


def prune_deep_values(body: bytes, descriptor: Any) -> bytes | None:
    """``body`` (a message of type ``descriptor``, in protobuf wire format) with every array
    or kvlist value nested past :data:`MAX_NESTING` levels emptied; ``None`` when none is, or
    when ``body`` is not well-formed.

    For a request the parser refused as too deep: the emptied value still sits one level past
    the limit, so the decoder finds it and stores :data:`NESTED_MARKER` in its place, like a
    too-deep value the parser took. Only fields whose type can hold an AnyValue are walked;
    the rest of the body is copied as it is.
    """
    try:
        return _prune(body, descriptor, 0)
    except (_Malformed, IndexError):
        return None


def _prune(data: bytes, descriptor: Any, levels: int) -> bytes | None:
    fields = _value_fields(descriptor)
    pieces: list[bytes] = []
    copied = pos = 0
    end = len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        wire_type = tag & 7
        if wire_type == 0:
            pos = _read_varint(data, pos)[1]
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length_start = pos
            length, start = _read_varint(data, pos)
            pos = start + length
            if pos > end:
                raise _Malformed
            field_type = fields.get(tag >> 3)
            if field_type is None:
                continue
            new: bytes | None
            if field_type.full_name not in _CONTAINERS:
                new = _prune(data[start:pos], field_type, levels)
            elif levels < MAX_NESTING:
                new = _prune(data[start:pos], field_type, levels + 1)
            else:
                new = b"" if length else None  # past the limit: kept, but empty
            if new is not None:
                pieces += [data[copied:length_start], varint(len(new)), new]
                copied = pos
        else:
            raise _Malformed  # groups (deprecated, never in OTLP) or garbage
    if pos != end:
        raise _Malformed
    if not pieces:
        return None
    pieces.append(data[copied:])
    return b"".join(pieces)


_VALUE_FIELDS: dict[str, dict[int, Any]] = {}


def _value_fields(descriptor: Any) -> dict[int, Any]:
    """Field number -> message type, for the fields of ``descriptor`` that can hold an AnyValue."""
    fields = _VALUE_FIELDS.get(descriptor.full_name)
    if fields is None:
        fields = {
            f.number: f.message_type
            for f in descriptor.fields
            if f.message_type is not None and _holds_values(f.message_type, set())
        }
        _VALUE_FIELDS[descriptor.full_name] = fields
    return fields


def _holds_values(descriptor: Any, seen: set[str]) -> bool:
    if descriptor.full_name == _ANY_VALUE:
        return True
    seen.add(descriptor.full_name)
    return any(
        _holds_values(f.message_type, seen)
        for f in descriptor.fields
        if f.message_type is not None and f.message_type.full_name not in seen
    )


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
