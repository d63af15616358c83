"""Verification: wait until ophiond holds telemetry carrying the injection's unique resource
attribute, so "instrumented" means "seen arriving", not "environment set"."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ophiond.containers.inject import ID_ATTRIBUTE

# Asks the daemon for the first telemetry since an ISO time whose resource has the attribute
# KEY=VALUE; answers {"found": bool, "signal", "service", "what", "at"}. The CLI gives one that
# calls the API (ApiClient.first_seen); the daemon's own engines can give one over the store.
FirstSeen = Callable[[str, str], Mapping[str, Any]]

_ID = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class Arrival:
    """The first telemetry that arrived from the instrumented container."""

    signal: str  # span, metric or log
    service_name: str
    what: str  # the span's name, the metric's name, or the log record's body
    at: str  # ISO time
    waited_s: float


def wait_for_telemetry(
    first_seen: FirstSeen,
    instrumentation_id: str,
    since: str,
    timeout: float,
    still_running: Callable[[], bool],
    interval: float = 1.0,
) -> Arrival | None:
    """Ask the daemon (``first_seen``) until telemetry with the id arrives; None on timeout or
    when the container stopped running meanwhile (``still_running`` says False)."""
    assert _ID.match(instrumentation_id), instrumentation_id
    started = time.monotonic()
    attribute = f"{ID_ATTRIBUTE}={instrumentation_id}"
    while True:
        seen = first_seen(attribute, since)
        if seen["found"]:
            return Arrival(
                str(seen["signal"]),
                str(seen["service"]),
                str(seen["what"]),
                str(seen["at"]),
                time.monotonic() - started,
            )
        if time.monotonic() - started >= timeout or not still_running():
            return None
        time.sleep(interval)
