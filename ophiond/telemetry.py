"""Self-telemetry: what the daemon received, rejected, refused and stored, per signal."""

from __future__ import annotations

import threading
from typing import Any

from ophiond.otlp.decode import Signal

_COUNTERS = ("requests", "received", "rejected", "refused", "stored", "failed")


class Telemetry:
    """Thread-safe counters since start.

    ``received``: records in decoded requests; ``rejected``: records refused as invalid
    (partial success); ``refused``: records turned away by backpressure (retryable);
    ``stored``: records committed; ``failed``: records whose commit failed (retryable).
    ``invalid_requests``: requests answered 400 / INVALID_ARGUMENT as a whole.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Signal, dict[str, int]] = {
            s: dict.fromkeys(_COUNTERS, 0) | {"invalid_requests": 0} for s in Signal
        }

    def _add(self, signal: Signal, counter: str, n: int) -> None:
        with self._lock:
            self._counts[signal][counter] += n

    def request(self, signal: Signal, received: int, rejected: int) -> None:
        with self._lock:
            counts = self._counts[signal]
            counts["requests"] += 1
            counts["received"] += received + rejected
            counts["rejected"] += rejected

    def invalid(self, signal: Signal) -> None:
        self._add(signal, "invalid_requests", 1)

    def refused(self, signal: Signal, n: int) -> None:
        self._add(signal, "refused", n)

    def stored(self, signal: Signal, n: int) -> None:
        self._add(signal, "stored", n)

    def failed(self, signal: Signal, n: int) -> None:
        self._add(signal, "failed", n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {s.value: dict(c) for s, c in self._counts.items()}
