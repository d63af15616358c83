"""What both receivers do with a request body: decode, queue, wait for the commit."""

from __future__ import annotations

import hmac
import time

from ophiond.otlp.decode import (
    DecodedBatch,
    InvalidPayload,
    Signal,
    decode,
    parse_json,
    parse_protobuf,
)
from ophiond.store.writer import QueueFull, Writer, WriterStopped
from ophiond.telemetry import Telemetry

__all__ = ["Ingest", "InvalidPayload", "QueueFull", "WriterStopped"]


class Ingest:
    """The receivers' entry into the store; one instance shared by gRPC and HTTP."""

    def __init__(self, writer: Writer, telemetry: Telemetry, ingest_key: str = "") -> None:
        self.writer = writer
        self.telemetry = telemetry
        self._key = ingest_key.encode()

    def authorized(self, authorization: str | None) -> bool:
        """True when no ingest key is set, or ``authorization`` is ``Bearer <key>``."""
        if not self._key:
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110)
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._key)

    def export(self, signal: Signal, body: bytes, as_json: bool) -> DecodedBatch:
        """Store one export request; return it once committed.

        Raises :class:`InvalidPayload` (not retryable), :class:`QueueFull` or
        :class:`WriterStopped` (retryable), or ``StoreError`` when the commit failed (retryable).
        """
        received_ns = time.time_ns()
        try:
            request = parse_json(signal, body) if as_json else parse_protobuf(signal, body)
        except InvalidPayload:
            self.telemetry.invalid(signal)
            raise
        batch = decode(signal, request, received_ns)
        self.telemetry.request(signal, batch.accepted, batch.rejected)
        if batch.accepted == 0:
            return batch
        try:
            pending = self.writer.submit(batch)
        except (QueueFull, WriterStopped):
            self.telemetry.refused(signal, batch.accepted)
            raise
        pending.wait()
        return batch
