"""Time windows and durations as people type them: ``--since 15m``, ``--min-duration 250ms``."""

from __future__ import annotations

import datetime as dt

from ophiond.config import parse_duration
from ophiond.errors import OphionError, TimeSpecError

SINCE_FORMS = "a duration back from now (30s, 15m, 2h, 1d, 1w) or an ISO time (2026-11-23T10:00)"
DURATION_FORMS = "a number and a unit: 250ms, 1.5s, 2m, 1h"


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """The start of a window, as an aware UTC datetime."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        return now - dt.timedelta(seconds=parse_duration(text))
    except OverflowError:
        raise TimeSpecError(
            f"{text!r} reaches back before the year 1", hint=f"use {SINCE_FORMS}"
        ) from None
    except OphionError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TimeSpecError(f"{text!r} is not a time", hint=f"use {SINCE_FORMS}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_duration_ns(text: str) -> int:
    """Nanoseconds from ``250ms``, ``1.5s``, ``2m``."""
    try:
        # round, not int: 4.1 * 1e9 is 4099999999.9999995 in binary floating point.
        return round(parse_duration(text) * 1e9)
    except OphionError:
        raise TimeSpecError(f"{text!r} is not a duration", hint=f"use {DURATION_FORMS}") from None


def to_ns(moment: dt.datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime."""
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
