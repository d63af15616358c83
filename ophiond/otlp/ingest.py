"""What both receivers do with a request body: decode, queue, wait for the commit."""

from __future__ import annotations

import hmac
import time

from ophiond.errors import InvalidPayload, QueueFull, WriterStopped
from ophiond.model import DEFAULT_LIMITS, BatchSink, DecodedBatch, IngestLimits, Signal
from ophiond.otlp.workers import DecodePool, decode_body
from ophiond.telemetry import Telemetry


class Ingest:
    """The receivers' entry into the store (``writer``); one instance shared by gRPC and HTTP."""

    def __init__(
        self,
        writer: BatchSink,
        telemetry: Telemetry,
        ingest_key: str = "",
        pool: DecodePool | None = None,
        limits: IngestLimits = DEFAULT_LIMITS,
    ) -> None:
        self.writer = writer
        self.telemetry = telemetry
        self._key = ingest_key.encode()
        # Decode workers; without them requests are decoded in the receiving thread, within
        # ``limits`` (the pool's workers have their own copy).
        self.pool = pool
        self.limits = limits

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
        :class:`WriterStopped` (retryable), or ``StoreError`` when the record could not be
        written or a decode worker died (retryable).
        """
        received_ns = time.time_ns()
        try:
            if self.pool is not None:
                batch = self.pool.decode(signal, body, as_json, received_ns)
            else:
                batch = decode_body(signal, body, as_json, received_ns, self.limits)
        except InvalidPayload:
            self.telemetry.invalid(signal)
            raise
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
