"""Self-telemetry: what the daemon received, rejected, refused and stored, per signal."""

from __future__ import annotations

import threading
from typing import Any

from ophiond.model import Signal

_COUNTERS = (
    "requests",
    "received",
    "rejected",
    "refused",
    "failed",
    "accepted",
    "stored",
    "dead_lettered",
    "lost",
    "recovered",
)


class Telemetry:
    """Thread-safe counters since start.

    ``received``: records in decoded requests; ``rejected``: records refused as invalid
    (partial success); ``refused``: records turned away by backpressure (retryable);
    ``failed``: records whose journal write failed (answered with a retryable error);
    ``accepted``: records acknowledged (durable in the journal); of those, ``stored``: in
    DuckDB, ``dead_lettered``: refused by DuckDB and set aside, ``lost``: lost on disk before
    their flush; the rest are waiting for their flush. ``recovered``: records an earlier run
    acknowledged, stored from the journal at start. ``invalid_requests``: requests answered
    400 / INVALID_ARGUMENT as a whole.
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

    def accepted(self, signal: Signal, n: int) -> None:
        self._add(signal, "accepted", n)

    def flushed(self, signal: str, stored: int, dead_lettered: int, lost: int) -> None:
        """A flush's outcome for the records of ``signal`` it covered (all at once, so that
        accepted = stored + dead-lettered + lost + waiting holds at every snapshot)."""
        with self._lock:
            counts = self._counts[Signal(signal)]
            counts["stored"] += stored
            counts["dead_lettered"] += dead_lettered
            counts["lost"] += lost

    def recovered(self, signal: str, n: int) -> None:
        self._add(Signal(signal), "recovered", n)

    def failed(self, signal: Signal, n: int) -> None:
        self._add(signal, "failed", n)

    def snapshot(self) -> dict[str, Any]:
        """Every counter by signal, with ``waiting``: accepted and not yet flushed."""
        with self._lock:
            return {
                s.value: {
                    **c,
                    "waiting": c["accepted"] - c["stored"] - c["dead_lettered"] - c["lost"],
                }
                for s, c in self._counts.items()
            }
