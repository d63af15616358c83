"""The local API: HTTP + JSON on a Unix socket (mode 0600) in the state directory.

Versioned paths under ``/api/v1``. Only the socket's owner (and root) can connect, which is the
access control for now. Endpoints: ``GET /api/v1/status``, ``POST /api/v1/sql``.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ophiond.errors import OphionError
from ophiond.serving import TrackedHandler, TrackedServer

log = logging.getLogger(__name__)

_MAX_BODY = 1 << 20

Route = Callable[[dict[str, Any]], dict[str, Any]]


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ophiond"
    timeout = 30  # an idle or stalled client does not hold a thread for ever
    server: _UnixServer

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("api %s", format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET", {})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return
        if length > _MAX_BODY:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "the request body is not JSON"})
            return
        if not isinstance(body, dict):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "the request body must be a JSON object"})
            return
        self._dispatch("POST", body)

    def _dispatch(self, method: str, body: dict[str, Any]) -> None:
        route = self.server.routes.get((method, self.path.split("?", 1)[0]))
        if route is None:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {method} {self.path} in this API"})
            return
        try:
            self._reply(HTTPStatus.OK, route(body))
        except OphionError as e:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": e.message, "hint": e.hint})
        except Exception:
            log.exception("API %s %s failed", method, self.path)
            self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the daemon's log"}
            )

    def _reply(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _UnixServer(TrackedServer, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False  # stop() waits for queries in flight (bounded by sql_timeout)
    block_on_close = True
    routes: dict[tuple[str, str], Route]


class ApiServer:
    """Serves ``routes`` ({(method, path): handler}) on a Unix socket."""

    def __init__(self, socket_path: Path, routes: dict[tuple[str, str], Route]) -> None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_path.exists() or socket_path.is_symlink():
            socket_path.unlink()  # a stale socket from a killed daemon; the lock file says it is ours
        # ophiond runs with umask 077, so the socket is never open to others, even before this.
        self.server = _UnixServer(str(socket_path), _Handler)
        os.chmod(socket_path, 0o600)
        self.server.routes = routes
        self.path = socket_path
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="ophion-api", kwargs={"poll_interval": 0.2}
        )

    def start(self) -> None:
        self._thread.start()
        log.info("API listening on %s", self.path)

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join()
        self.server.close_idle_connections()
        self.server.server_close()  # waits for queries in flight, bounded by sql_timeout
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
