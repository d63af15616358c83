"""The local API: HTTP + JSON under ``/api/v1``, on a Unix socket (mode 0600) in the state dir.

Routes are declared with the role they need (:class:`Role`); a caller on the Unix socket is
the daemon's own user and has every role. A route either returns one JSON document or, when
it streams, yields documents that are sent as NDJSON (one per line, chunked) until the client
goes away or the daemon stops.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ophiond.api.contract import PREFIX, Endpoint, Role
from ophiond.errors import OphionError, RequestRefused
from ophiond.serving import (
    ClientLimits,
    RequestTimeout,
    ServerThread,
    TrackedHandler,
    TrackedServer,
    body_framing,
)

log = logging.getLogger(__name__)

_MAX_BODY = 1 << 20


@dataclass
class ApiRequest:
    """One call to the API, as a route handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    role: Role
    path_params: dict[str, str] = field(default_factory=dict)
    # Set when the daemon stops or the client leaves; streaming handlers end when it is set.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Who is calling, for the audit log: "socket" (the daemon's own user) or "token:NAME".
    caller: str = "socket"

    def param(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter, else the body's value, else ``default``."""
        values = self.query.get(name)
        if values:
            return values[-1]
        value = self.body.get(name)
        return default if value is None else str(value)

    def params(self, name: str) -> list[str]:
        """Every value of a repeated query parameter (``?attr=a=1&attr=b=2``)."""
        values = list(self.query.get(name, []))
        body_value = self.body.get(name)
        if isinstance(body_value, list):
            values.extend(str(v) for v in body_value)
        return values


Handler = Callable[[ApiRequest], Any]


@dataclass(frozen=True)
class Route:
    """An endpoint of the contract and the handler that answers it."""

    endpoint: Endpoint
    handler: Handler

    @property
    def role(self) -> Role:
        return self.endpoint.role

    @property
    def stream(self) -> bool:
        return self.endpoint.stream

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.endpoint.method:
            return None
        want = (PREFIX + self.endpoint.path).strip("/").split("/")
        got = path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params = {}
        for w, g in zip(want, got, strict=True):
            if w.startswith("{") and w.endswith("}"):
                params[w[1:-1]] = unquote(g)
            elif w != g:
                return None
        return params


class ApiHandler(TrackedHandler):
    """Serves the routes of its server; :meth:`caller` says who is calling."""

    protocol_version = "HTTP/1.1"
    server_version = "ophiond"
    server: ApiServerBase

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("api %s", format % args)

    def caller(self) -> tuple[Role, str] | None:
        """The role of this caller and its name for the audit log; ``None`` refuses the
        request (answered 401). The Unix socket's callers passed its 0600 permission: they
        are the daemon's user."""
        return Role.ADMIN, "socket"

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self._read_body() is not None:
            self._dispatch("GET", {})

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        if self._read_body() is not None:
            self._dispatch("DELETE", {})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        raw = self._read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.reply(HTTPStatus.BAD_REQUEST, {"error": "the request body is not JSON"})
            return
        if not isinstance(body, dict):
            self.reply(HTTPStatus.BAD_REQUEST, {"error": "the request body must be a JSON object"})
            return
        self._dispatch("POST", body)

    def _read_body(self) -> bytes | None:
        """The request's body (only POST may have one); None when refused (answered)."""
        try:
            framing = body_framing(self.headers)
            if framing.chunked:
                raise RequestRefused(
                    HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked"
                )
            length = framing.length or 0
            if length and self.command != "POST":
                raise RequestRefused(HTTPStatus.BAD_REQUEST, f"{self.command} takes no body")
            if length > _MAX_BODY:
                raise RequestRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
            raw = self.rfile.read(length)
        except RequestRefused as e:
            self.refuse(e.http_status, e.message)
            return None
        except RequestTimeout as e:
            self.refuse(HTTPStatus.REQUEST_TIMEOUT, e.message)
            return None
        if len(raw) < length:
            self.refuse(HTTPStatus.BAD_REQUEST, "body shorter than Content-Length")
            return None
        self.request_received()
        return raw

    def refuse(self, status: HTTPStatus, message: str) -> None:
        # The body may be unread: it must not be taken for the next request.
        self.close_connection = True
        self.reply(status, {"error": message}, {"Connection": "close"})

    def _dispatch(self, method: str, body: dict[str, Any]) -> None:
        caller = self.caller()
        if caller is None:
            return  # caller() has answered (401 or 429)
        role, name = caller
        url = urlsplit(self.path)
        for route in self.server.routes:
            params = route.match(method, url.path)
            if params is not None:
                break
        else:
            self.reply(HTTPStatus.NOT_FOUND, {"error": f"no {method} {url.path} in this API"})
            return
        if role < route.role:
            self.reply(
                HTTPStatus.FORBIDDEN,
                {
                    "error": f"this token has the {role.name.lower()} role; "
                    f"{method} {url.path} needs {route.role.name.lower()}",
                },
            )
            return
        request = ApiRequest(
            method,
            url.path,
            parse_qs(url.query),
            body,
            role,
            params,
            self.server.stopping_event,
            caller=name,
        )
        try:
            result = route.handler(request)
        except OphionError as e:
            self.reply(e.http_status, e.to_json())
            return
        except Exception:
            log.exception("API %s %s failed", method, url.path)
            self.reply(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the daemon's log"}
            )
            return
        if route.stream:
            self._stream(result)  # headers go out now: no error answer can follow
            return
        try:
            self.reply(HTTPStatus.OK, result)
        except OphionError as e:
            self.reply(e.http_status, e.to_json())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("API %s %s failed", method, url.path)
            self.reply(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the daemon's log"}
            )

    def _stream(self, documents: Iterator[dict[str, Any] | None]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for document in documents:
                # None is a keep-alive: an empty line, which also finds out a departed client.
                line = b"\n" if document is None else json.dumps(document).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client left or stopped reading (timeout): the stream simply ends
        except OphionError as e:
            # Headers are out; end the stream with an error line the client shows.
            log.warning("stream %s ended: %s", self.path, e.message)
            line = json.dumps(e.to_json()).encode() + b"\n"
            try:
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(line), line))
            except OSError:
                pass
        finally:
            close = getattr(documents, "close", None)
            if close is not None:
                close()

    def reply(
        self, status: HTTPStatus, document: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class ApiServerBase(TrackedServer):
    """What every API listener carries: the routes and the stop signal for streams."""

    routes: list[Route]


class _UnixServer(ApiServerBase, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False  # stop() waits for queries in flight (bounded by sql_timeout)
    block_on_close = True


class _UnixHandler(ApiHandler):
    def address_string(self) -> str:
        return "unix"


class ApiServer(ServerThread):
    """Serves ``routes`` on a Unix socket."""

    def __init__(self, socket_path: Path, routes: list[Route], limits: ClientLimits) -> None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_path.exists() or socket_path.is_symlink():
            socket_path.unlink()  # a stale socket from a killed daemon; the lock file says it is ours
        # ophiond runs with umask 077, so the socket is never open to others, even before this.
        server = _UnixServer(str(socket_path), _UnixHandler)
        os.chmod(socket_path, 0o600)
        server.routes = routes
        super().__init__(server, "ophion-api", "the API", limits)
        self.path = socket_path

    def start(self) -> None:
        super().start()
        log.info("API listening on %s", self.path)

    def stop(self) -> None:
        super().stop()  # queries in flight finish first, bounded by sql_timeout
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
