"""The live log feed keeps a follower's stream talking while records it filters out pour in."""

from __future__ import annotations

import datetime as dt
import threading

from ophiond.store.feed import LogFeed
from ophiond.store.queries import LogSearch


def test_a_flood_of_filtered_out_records_still_sends_keep_alives() -> None:
    """Clients take a long silence for a hung daemon (``ApiStream``'s read timeout), so
    records that do not match must not hold back the keep-alive until the queue is empty."""
    feed = LogFeed()
    subscription = feed.subscribe()
    other = {
        "time_ns": 1,
        "service_name": "noisy",
        "severity_number": 9,
        "severity_text": "INFO",
        "body": "not for this follower",
        "body_type": "string",
        "trace_id": None,
        "span_id": None,
        "attributes": "{}",
    }
    for _ in range(1000):
        subscription.inbox.put_nowait(other)
    search = LogSearch(since=dt.datetime.now(dt.UTC), service="quiet")
    records = subscription.records(search, threading.Event(), keepalive_s=0.0)
    assert next(records) is None  # a keep-alive
    assert subscription.inbox.qsize() > 900  # sent while the flood was still queued
    subscription.close()
