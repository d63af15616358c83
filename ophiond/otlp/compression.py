"""Decompressing a gzip request body within bounds: its size, its members, its expansion.

A body may hold several gzip members one after the other (RFC 1952); each is inflated in turn.
The input is fed to zlib a slice at a time, because zlib keeps a copy of whatever input follows
the end of a member (``unused_data``): fed the whole body, that copy is the rest of the body,
once per member, and 200,000 empty members (4 MB) would cost minutes. Fed slices, the copy is
at most one slice, so the time is linear in the body; the member count is bounded as well.
"""

from __future__ import annotations

import zlib

from ophiond.errors import GzipRefused

# Gzip members one body may hold. Clients send one; a few come from concatenated streams.
MAX_GZIP_MEMBERS = 100
# Decompressed size past which the body may be at most this many times its compressed size.
# OTLP protobuf compresses about 5 to 20 times, repetitive OTLP/JSON up to about 130; a gzip
# bomb (zeros) about 1,000.
MAX_EXPANSION = 300
_EXPANSION_CHECKED_FROM = 1 << 20
# Input fed to zlib at a time (the most it copies at the end of each member), and output
# asked of it at a time (so the expansion is checked before a bomb has inflated much).
_SLICE = 64 * 1024
_STEP = 4 << 20


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate every gzip member of ``body``; refuse more than ``limit`` bytes of output, more
    than :data:`MAX_GZIP_MEMBERS` members, or an expansion past :data:`MAX_EXPANSION`."""
    view = memoryview(body)
    fed = 0
    pending: bytes | memoryview = b""  # input the current inflater has not consumed yet
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    members = 1
    out: list[bytes] = []
    total = 0
    more_output = False  # the last call stopped at its output bound: zlib may hold more
    while pending or more_output or fed < len(view):
        if not pending and not more_output:
            pending = view[fed : fed + _SLICE]
            fed += len(pending)
        bound = min(limit + 1 - total, _STEP)
        try:
            data = inflater.decompress(pending, bound)
        except zlib.error as e:
            raise GzipRefused(f"invalid gzip body: {e}") from None
        more_output = len(data) == bound
        total += len(data)
        out.append(data)
        if total > limit:
            raise GzipRefused(
                f"request body larger than {limit} bytes after decompression "
                "(max_request_size); send smaller batches",
                too_large=True,
            )
        if inflater.eof:
            more_output = False
            pending = inflater.unused_data
            if pending or fed < len(view):
                members += 1
                if members > MAX_GZIP_MEMBERS:
                    raise GzipRefused(
                        f"gzip body of more than {MAX_GZIP_MEMBERS} members; "
                        "send the request as one gzip stream"
                    )
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            pending = inflater.unconsumed_tail
        consumed = fed - len(pending)
        if total > _EXPANSION_CHECKED_FROM and total > MAX_EXPANSION * consumed:
            raise GzipRefused(
                f"gzip body expands more than {MAX_EXPANSION} times ({consumed} bytes became "
                f"over {total}); such a body is refused as a likely decompression bomb",
                too_large=True,
            )
    if body and not inflater.eof:
        raise GzipRefused("truncated gzip body")
    return b"".join(out)
