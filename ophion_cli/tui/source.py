"""Where the terminal UI's data comes from: the daemon's API, one call per question.

Each method blocks (the app calls them from worker threads, never from the UI thread) and
returns the API's JSON document. ``DaemonNotRunning`` means no daemon answers; ``ApiError``
a refused question (both ``OphionError`` with a message and a hint).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ophiond.api.client import ApiClient, ApiStream

T = TypeVar("T")


class Source(Protocol):
    """What the screens ask; tests give the app another implementation with fixed data."""

    def status(self) -> dict[str, Any]: ...

    def services(self, since: str, step: str | None = None) -> dict[str, Any]: ...

    def traces(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def trace(self, trace_id: str) -> dict[str, Any]: ...

    def logs(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def metrics(self, since: str) -> dict[str, Any]: ...

    def metric(self, name: str, params: dict[str, Any]) -> dict[str, Any]: ...

    def service_map(self, since: str) -> dict[str, Any]: ...

    def open_log_stream(self, params: dict[str, Any]) -> Any:
        """The live log stream: iterate it for records; ``close()`` (any thread) ends it."""
        ...


class ApiSource:
    """The daemon named by ``--api``/``OPHION_API`` (the local one by default)."""

    def __init__(self, api: str | None, token: str | None) -> None:
        self._api = api
        self._token = token
        self._client: ApiClient | None = None

    def _ask(self, ask: Callable[[ApiClient], T]) -> T:
        """``ask(client)`` on a client made on first use (finding the local daemon reads its
        state files) and made again after the daemon went away: it may come back elsewhere (a
        new socket, a new port)."""
        from ophiond.api.client import connect
        from ophiond.errors import DaemonNotRunning

        if self._client is None:
            self._client = connect(self._api, self._token)
        try:
            return ask(self._client)
        except DaemonNotRunning:
            self._client = None
            raise

    def _call(self, ask: Callable[[ApiClient], Mapping[str, Any]]) -> dict[str, Any]:
        """A document the API answered, as a plain dict for the screens."""
        return dict(self._ask(ask))

    def status(self) -> dict[str, Any]:
        return self._call(lambda api: api.status())

    def services(self, since: str, step: str | None = None) -> dict[str, Any]:
        from ophiond.api.contract import ServicesQuery

        return self._call(lambda api: api.services(ServicesQuery(since, step)))

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        from ophiond.api.contract import TraceQuery

        return self._call(lambda api: api.traces(TraceQuery(**_fields(params))))

    def trace(self, trace_id: str) -> dict[str, Any]:
        return self._call(lambda api: api.trace(trace_id))

    def logs(self, params: dict[str, Any]) -> dict[str, Any]:
        from ophiond.api.contract import LogQuery

        return self._call(lambda api: api.logs(LogQuery(**_fields(params))))

    def metrics(self, since: str) -> dict[str, Any]:
        return self._call(lambda api: api.metrics(since))

    def metric(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        from ophiond.api.contract import MetricQuery

        return self._call(lambda api: api.metric(MetricQuery(name, **_fields(params))))

    def service_map(self, since: str) -> dict[str, Any]:
        return self._call(lambda api: api.service_map(since))

    def open_log_stream(self, params: dict[str, Any]) -> ApiStream:
        from ophiond.api.contract import LogQuery

        return self._ask(lambda api: api.follow_logs(LogQuery(**_fields(params))))


def _fields(params: dict[str, Any]) -> dict[str, Any]:
    """A screen's query parameters as a request type's fields (``attr``, one filter or a list
    of them, becomes a tuple)."""
    fields = {k: v for k, v in params.items() if v is not None}
    if "attr" in fields:
        attr = fields["attr"]
        fields["attr"] = (attr,) if isinstance(attr, str) else tuple(attr)
    return fields
