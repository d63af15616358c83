"""The exception family of the core, all of it: every expected failure carries a message and a
hint, the HTTP status the local API answers it with, and the exit code a command ends with.

Third-party errors are converted where they enter (``raise StoreError(...) from e``); only the
front ends catch these and print them. A subclass says what went wrong in the domain; its
``http_status`` and ``exit_code`` are class attributes, so the API server and the CLI read them
instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, ClassVar


class OphionError(Exception):
    """An expected failure that a front end shows as one line plus a hint, without a traceback."""

    http_status: HTTPStatus = HTTPStatus.BAD_REQUEST
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Lines shown under the hint as they are (a failed container's last log lines, say).
        self.details = tuple(details)

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        """The error as the local API answers it; ``kind`` names its class, so that a client
        raises the same one (:data:`REMOTE`)."""
        return {"error": self.message, "hint": self.hint, "kind": type(self).__name__}


# ---------------------------------------------------------------------------------------------
# What the user typed or configured


class ConfigError(OphionError):
    """A setting is missing, unknown or malformed."""


class TimeSpecError(OphionError):
    """A time or duration the user typed is not one of the accepted forms."""


class InvalidParameter(OphionError):
    """A value given to the API (an option of a command) is not one it takes; ``param`` is the
    parameter's name, which the CLI's option of the same name reports as a usage error."""

    exit_code = 2

    def __init__(self, param: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "param": self.param}


# ---------------------------------------------------------------------------------------------
# The store


class StoreError(OphionError):
    """The DuckDB store could not be opened, migrated, written or queried."""

    http_status = HTTPStatus.INTERNAL_SERVER_ERROR

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


class QueueFull(OphionError):
    """The write queue has no room: the client should retry later."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class WriterStopped(OphionError):
    """The daemon is shutting down and takes no more writes."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class NotFound(OphionError):
    """What was asked for is not in the store."""

    http_status = HTTPStatus.NOT_FOUND


class QueryError(OphionError):
    """The user's SQL was refused or failed: a usage problem, not a daemon fault."""


class SqlRefused(QueryError):
    """The statement is not one ``ophion sql`` runs: it writes, acts, or is not one SELECT."""


class QueryNotRun(QueryError):
    """The query was not started or was stopped for others' sake: worth trying again."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


# ---------------------------------------------------------------------------------------------
# The receivers


class InvalidPayload(OphionError):
    """The request body cannot be decoded at all: HTTP 400 / gRPC INVALID_ARGUMENT."""


class GzipRefused(OphionError):
    """A gzip body that is not taken: malformed (400) or too large once inflated (413)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large
        if too_large:
            self.http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class DecodeFailed(StoreError):
    """A decode worker died while decoding: not the client's fault, so a retryable error."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class RequestRefused(OphionError):
    """An HTTP request refused before its body is read, with the status to answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class BodyRefused(RequestRefused):
    """A body refused, or cut off while it arrived, because the body budget is full: 503,
    worth sending again later."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTPStatus.SERVICE_UNAVAILABLE, message)


# ---------------------------------------------------------------------------------------------
# Containers


class ContainerError(OphionError):
    """A container could not be inspected, instrumented or recreated; nothing was left half
    changed."""


class RolledBack(ContainerError):
    """The new container did not prove itself and the original is back; ``details`` holds the
    new container's last log lines."""

    def __init__(self, message: str, hint: str | None, logs: Sequence[str]) -> None:
        super().__init__(message, hint, details=logs)


# ---------------------------------------------------------------------------------------------
# The local API and its clients


class TokenError(OphionError):
    """A token cannot be created, found or revoked; ``http_status`` is the API's answer."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        http_status: HTTPStatus = HTTPStatus.BAD_REQUEST,
    ) -> None:
        super().__init__(message, hint)
        self.http_status = http_status


class DaemonNotRunning(OphionError):
    """A client could not reach ophiond."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class ApiError(OphionError):
    """The daemon's local API answered with an error."""


# The errors a client of the local API raises as themselves when the daemon answers with one
# (by its ``kind``); any other becomes an ApiError with the same message and hint.
REMOTE: dict[str, type[OphionError]] = {
    cls.__name__: cls
    for cls in (
        ConfigError,
        TimeSpecError,
        StoreError,
        NotFound,
        QueryError,
        SqlRefused,
        QueryNotRun,
        TokenError,
    )
}
