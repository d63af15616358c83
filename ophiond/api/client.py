"""Client of the daemon's local API, used by the CLI (and later the TUI and the copilot)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ophiond.config import SYSTEM_HOME
from ophiond.errors import ApiError, DaemonNotRunning, OphionError

_START_HINT = "start it with: ophion daemon start   (or: systemctl start ophiond)"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def find_socket(api: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The API socket: ``--api``/``OPHION_API``, else the one of ``OPHION_HOME`` or the user's
    state directory, else the system service's."""
    env = os.environ if env is None else env
    chosen = api or env.get("OPHION_API")
    if chosen:
        if chosen.startswith("unix:"):
            chosen = chosen[len("unix:") :].removeprefix("//")
        if "://" in chosen:
            raise OphionError(
                f"cannot use API address {chosen!r}: this version reaches the daemon through its "
                "Unix socket only",
                hint="pass the socket path, e.g. --api unix:/var/lib/ophion/state/api.sock",
            )
        return Path(chosen)
    from ophiond.config import load_settings

    own = load_settings(env=env).validate().paths.api_socket
    system = SYSTEM_HOME / "state" / "api.sock"
    if not own.exists() and not env.get("OPHION_HOME") and system.exists():
        return system
    return own


class ApiClient:
    """Calls ``/api/v1/...`` on the daemon; raises :class:`DaemonNotRunning` or :class:`ApiError`."""

    def __init__(self, socket_path: Path, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``/api/v1<path>``; ``params`` become the query string (lists repeat the key,
        ``None`` values are left out)."""
        return self._call("GET", path + _query(params), None)

    def stream(
        self, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """GET an NDJSON stream; yields each document until the daemon ends it."""
        conn = self._connection(timeout=None)
        try:
            try:
                conn.request("GET", f"/api/v1{path}{_query(params)}")
                response = conn.getresponse()
            except OSError as e:
                raise self._unreachable(e) from None
            if response.status != 200:
                self._raise_for(response.status, response.read())
            while True:
                try:
                    line = response.readline()
                except OSError as e:
                    raise self._unreachable(e) from None
                if not line:
                    return  # the daemon ended the stream (it is stopping)
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, body)

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        return _UnixConnection(str(self.socket_path), timeout)

    def _unreachable(self, error: OSError) -> OphionError:
        if isinstance(error, FileNotFoundError | ConnectionRefusedError):
            return DaemonNotRunning(
                f"ophiond is not running (no daemon at {self.socket_path})", hint=_START_HINT
            )
        if isinstance(error, PermissionError):
            return OphionError(
                f"permission denied on {self.socket_path}: the API socket is readable only by "
                "the user the daemon runs as",
                hint="run the command as that user (or with sudo for the system service)",
            )
        return DaemonNotRunning(
            f"ophiond did not answer on {self.socket_path}: {error}", hint=_START_HINT
        )

    def _raise_for(self, status: int, data: bytes) -> None:
        try:
            document = json.loads(data)
        except ValueError:
            raise ApiError(f"the daemon sent a reply that is not JSON ({status})") from None
        raise ApiError(document.get("error", f"HTTP {status}"), hint=document.get("hint"))

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        conn = self._connection(self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, f"/api/v1{path}", body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except OSError as e:
            raise self._unreachable(e) from None
        finally:
            conn.close()
        if response.status != 200:
            self._raise_for(response.status, data)
        try:
            document = json.loads(data)
        except ValueError:
            raise ApiError("the daemon sent a reply that is not JSON") from None
        if not isinstance(document, dict):
            raise ApiError("the daemon sent an unexpected reply")
        return document


def _query(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    pairs = [(k, v) for k, v in params.items() if v is not None and v != []]
    return "?" + urlencode(pairs, doseq=True) if pairs else ""
