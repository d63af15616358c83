"""Where the terminal UI's data comes from: the daemon's API, one call per question.

Each method blocks (the app calls them from worker threads, never from the UI thread) and
returns the API's JSON document. ``DaemonNotRunning`` means no daemon answers; ``ApiError``
a refused question (both ``OphionError`` with a message and a hint).
"""

from __future__ import annotations

from typing import Any, Protocol


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
        self._client: Any = None

    def _call(self, method: str, path: str, params: dict[str, Any] | None) -> Any:
        """``ApiClient.<method>(path, params)`` on a client made on first use (finding the
        local daemon reads its state files) and made again after the daemon went away: it may
        come back elsewhere (a new socket, a new port)."""
        from ophiond.api.client import connect
        from ophiond.errors import DaemonNotRunning

        if self._client is None:
            self._client = connect(self._api, self._token)
        try:
            return getattr(self._client, method)(path, params)
        except DaemonNotRunning:
            self._client = None
            raise

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call("get", path, params)
        return result

    def status(self) -> dict[str, Any]:
        return self._get("/status")

    def services(self, since: str, step: str | None = None) -> dict[str, Any]:
        return self._get("/services", {"since": since, "step": step})

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._get("/traces", params)

    def trace(self, trace_id: str) -> dict[str, Any]:
        return self._get(f"/traces/{trace_id}")

    def logs(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._get("/logs", params)

    def metrics(self, since: str) -> dict[str, Any]:
        return self._get("/metrics", {"since": since})

    def metric(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        from urllib.parse import quote

        return self._get(f"/metrics/{quote(name, safe='')}", params)

    def service_map(self, since: str) -> dict[str, Any]:
        return self._get("/map", {"since": since})

    def open_log_stream(self, params: dict[str, Any]) -> Any:
        return self._call("open_stream", "/logs/stream", params)
