"""Verification: wait until ophiond holds telemetry carrying the injection's unique resource
attribute, so "instrumented" means "seen arriving", not "environment set"."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ophiond.containers.inject import ID_ATTRIBUTE

_ID = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class Arrival:
    """The first telemetry that arrived from the instrumented container."""

    signal: str  # span, metric or log
    service_name: str
    what: str  # the span's name, the metric's name, or the log record's body
    at: str  # ISO time
    waited_s: float


def _query(instrumentation_id: str, since: str) -> str:
    # The id is ours (hex), checked before it reaches SQL; the time is ours too.
    attribute = f"resource_attributes->>'$.\"{ID_ATTRIBUTE}\"' = '{instrumentation_id}'"
    return f"""
        SELECT * FROM (
          SELECT 'span' AS signal, service_name, name AS what, start_time AS first_at
            FROM spans WHERE start_time >= TIMESTAMP '{since}' AND {attribute}
          UNION ALL
          SELECT 'metric', service_name, metric_name, timestamp
            FROM metric_points WHERE timestamp >= TIMESTAMP '{since}' AND {attribute}
          UNION ALL
          SELECT 'log', service_name, left(body, 120), timestamp
            FROM logs WHERE timestamp >= TIMESTAMP '{since}' AND {attribute}
        ) ORDER BY first_at LIMIT 1
    """


def wait_for_telemetry(
    api: Any,
    instrumentation_id: str,
    since: str,
    timeout: float,
    still_running: Callable[[], bool],
    interval: float = 1.0,
) -> Arrival | None:
    """Poll the daemon until telemetry with the id arrives; None on timeout or when the
    container stopped running meanwhile (``still_running`` says False)."""
    assert _ID.match(instrumentation_id), instrumentation_id
    started = time.monotonic()
    sql = _query(instrumentation_id, since)
    while True:
        rows = api.post("/sql", {"sql": sql, "max_rows": 1})["rows"]
        if rows:
            signal, service, what, at = rows[0]
            return Arrival(signal, service, str(what), str(at), time.monotonic() - started)
        if time.monotonic() - started >= timeout or not still_running():
            return None
        time.sleep(interval)
