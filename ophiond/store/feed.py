"""Live log records for ``ophion logs --follow``: the writer publishes what it committed."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ophiond.store.queries import LogSearch, log_document

if TYPE_CHECKING:
    import pyarrow as pa

# Records a slow follower may fall behind by; past it, it misses records rather than grow.
_BACKLOG = 10_000
# How often a waiting follower looks whether the daemon is stopping.
_STOP_CHECK_S = 0.2
_COLUMNS = [
    "timestamp",
    "service_name",
    "severity_number",
    "severity_text",
    "body",
    "body_type",
    "trace_id",
    "span_id",
    "attributes",
]


class Subscription:
    """One follower's queue of committed records."""

    def __init__(self, feed: LogFeed) -> None:
        self._feed = feed
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue(_BACKLOG)
        self.dropped = 0  # records that did not fit in the inbox since last reported

    def records(
        self, search: LogSearch, stop: threading.Event, keepalive_s: float = 5.0
    ) -> Iterator[dict[str, Any] | None]:
        """Matching records as they are committed; ``None`` now and then as a keep-alive.

        Waits in short slices so that a stopping daemon ends the stream at once.
        """
        quiet_since = time.monotonic()
        while not stop.is_set():
            try:
                record = self.inbox.get(timeout=_STOP_CHECK_S)
            except queue.Empty:
                if time.monotonic() - quiet_since >= keepalive_s:
                    quiet_since = time.monotonic()
                    yield None
                continue
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                yield {"skipped": dropped}
            if search.matches(record):
                quiet_since = time.monotonic()
                yield log_document(record)
            elif time.monotonic() - quiet_since >= keepalive_s:
                # A flood of records this follower filters out must not silence it: clients
                # take 15 s without a line for a hung daemon.
                quiet_since = time.monotonic()
                yield None

    def close(self) -> None:
        self._feed.unsubscribe(self)


class LogFeed:
    """Fan-out of committed log records to followers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def publish(self, table: pa.Table) -> None:
        """Called by the writer after a commit that stored log records."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        if not subscriptions:
            return
        import pyarrow as pa

        selected = table.select(_COLUMNS)
        # Nanosecond timestamps do not fit datetime: hand them over as integers.
        selected = selected.set_column(0, "time_ns", selected.column(0).cast(pa.int64()))
        for record in selected.to_pylist():
            for subscription in subscriptions:
                try:
                    subscription.inbox.put_nowait(record)
                except queue.Full:
                    # That follower cannot keep up: it misses records rather than grow, and
                    # is told how many.
                    subscription.dropped += 1
