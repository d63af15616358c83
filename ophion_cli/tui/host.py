"""The app as its screens and widgets see it: what they read (the source, the time window, the
daemon's state) and what they ask of it (report a failed question, open another screen).

Screens and widgets type against these protocols, never against the app class, so the app
imports the screens and nothing imports the app.
"""

from __future__ import annotations

from typing import Protocol

from ophion_cli.tui.source import Source
from ophiond.errors import OphionError

# The signals the daemon stores, as its ``/status`` counts them.
SIGNALS = ("traces", "logs", "metrics")
# The time windows ``w`` steps through.
WINDOWS = ("5m", "15m", "1h", "6h", "24h")


class DaemonState(Protocol):
    """What the status bar shows: whether the daemon answers, how fast it stores, the window."""

    window: str
    """The time window the screens show: a length (``15m``) or an ISO start time."""
    daemon_error: str | None
    """Why the daemon does not answer us; ``None`` while it does."""
    daemon_refused: bool
    """The daemon answers, but refuses us (a token it does not take)."""
    daemon_version: str
    ingest_rates: dict[str, float]
    """Records stored per second, by signal (one of ``SIGNALS``), since the previous poll."""


class Host(DaemonState, Protocol):
    """What a screen reads from the app and asks of it."""

    source: Source
    refresh_s: float
    """Seconds between a screen's questions while it is shown (times its ``REFRESH``)."""

    def query_failed(self, error: OphionError) -> None:
        """A screen's question failed (called on the UI thread)."""

    def open_traces(self, service: str | None = None) -> None:
        """Show the traces (of ``service``) over the current screen."""

    def open_trace(self, trace_id: str) -> None:
        """Show one trace's waterfall over the current screen."""

    def open_logs(self, service: str = "") -> None:
        """Show the live log tail (of ``service``) over the current screen."""
