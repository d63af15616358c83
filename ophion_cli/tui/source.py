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

    def describe(self) -> str:
        """The daemon's address, for the status bar."""
        ...


class ApiSource:
    """The daemon named by ``--api``/``OPHION_API`` (the local one by default)."""

    def __init__(self, api: str | None, token: str | None) -> None:
        self._api = api
        self._token = token
        self._client: Any = None

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from ophiond.api.client import connect

        if self._client is None:
            # (made on first use: finding the local daemon reads its state files)
            self._client = connect(self._api, self._token)
        try:
            result: dict[str, Any] = self._client.get(path, params)
        except Exception:
            self._client = None  # the daemon may come back elsewhere (a new socket, new port)
            raise
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
        from ophiond.api.client import connect

        if self._client is None:
            self._client = connect(self._api, self._token)
        try:
            return self._client.open_stream("/logs/stream", params)
        except Exception:
            self._client = None
            raise

    def describe(self) -> str:
        return self._api or "local ophiond"
