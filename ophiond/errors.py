"""The exception family of the core: every expected failure carries a message and a hint."""

from __future__ import annotations

from collections.abc import Sequence


class OphionError(Exception):
    """An expected failure that a front end shows as one line plus a hint, without a traceback."""

    def __init__(self, message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Lines shown under the hint as they are (a failed container's last log lines, say).
        self.details = tuple(details)

    def __str__(self) -> str:
        return self.message


class ConfigError(OphionError):
    """A setting is missing, unknown or malformed."""


class StoreError(OphionError):
    """The DuckDB store could not be opened, migrated, written or queried."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        details: Sequence[str] = (),
        transient: bool = False,
    ) -> None:
        super().__init__(message, hint, details)
        # The disk failed (full, an I/O error), not the data: trying again later may work.
        self.transient = transient


class DaemonNotRunning(OphionError):
    """The CLI could not reach ophiond."""


class ApiError(OphionError):
    """The daemon's local API answered with an error."""
