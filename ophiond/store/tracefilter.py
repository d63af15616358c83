"""Per-flush trace-id filters: which flushes may hold a trace, without reading their rows.

Each flush of the writer (one journal segment) inserts spans sorted by trace id in up to two
row groups, so each of them still spans half of all ids or more, and an event or link row
group holds the sorted runs of several flushes: DuckDB's min/max statistics rule out few row
groups for a trace lookup. So the writer also stores, per flush, a Bloom filter of the trace
ids it wrote (table ``trace_filters``: flush, bits) and tags the rows with the flush (column
``flush``). A lookup first asks the filters which flushes may hold the trace (about one in a
hundred answers yes wrongly), then reads only those flushes' rows: a list of ``flush`` values
DuckDB prunes row groups with.

The hash is BLAKE2b of the id's text, fixed here and independent of Python's and DuckDB's own
hash functions, so filters written by one version are read correctly by every later one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# Bits per trace id and probes per id: a false positive rate of about 0.8%.
_BITS_PER_ID = 10
PROBES = 7
_MASK64 = (1 << 64) - 1


def probes(trace_id: str) -> list[int]:
    """The 64-bit values whose remainders modulo a filter's length are the id's bits in it."""
    digest = hashlib.blake2b(trace_id.encode(), digest_size=16).digest()
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:], "little") | 1
    return [(h1 + i * h2) & _MASK64 for i in range(PROBES)]


def build(trace_ids: Iterable[str]) -> bytes:
    """A filter holding ``trace_ids``: bit ``i`` is byte ``i // 8``, most significant bit first
    (as DuckDB's ``get_bit`` reads the BLOB cast to BIT)."""
    ids = set(trace_ids)
    size = max(64, -(-_BITS_PER_ID * len(ids) // 8) * 8)
    bits = bytearray(size // 8)
    for trace_id in ids:
        for value in probes(trace_id):
            position = value % size
            bits[position >> 3] |= 0x80 >> (position & 7)
    return bytes(bits)


def sql_test(column: str = "bits") -> str:
    """A condition true when every probe's bit is set in ``column`` (one parameter per probe)."""
    return " AND ".join(
        f"get_bit({column}, (?::UBIGINT % bit_length({column}))::INTEGER) = 1"
        for _ in range(PROBES)
    )
