"""The exception family of the core: every expected failure carries a message and a hint."""

from __future__ import annotations


class OphionError(Exception):
    """An expected failure that a front end shows as one line plus a hint, without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(OphionError):
    """A setting is missing, unknown or malformed."""


class StoreError(OphionError):
    """The DuckDB store could not be opened, migrated, written or queried."""


class DaemonNotRunning(OphionError):
    """The CLI could not reach ophiond."""


class ApiError(OphionError):
    """The daemon's local API answered with an error."""
