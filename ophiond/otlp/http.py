"""OTLP/HTTP receiver: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` on :4318.

Protobuf and JSON bodies, gzip, answers in the request's encoding. Errors carry a
``google.rpc.Status`` body as the OTLP specification asks: 400 malformed (not retryable),
401 wrong ingest key, 408 request sent too slowly, 413 too large, 415 wrong media type or
encoding, 503 + Retry-After when the write queue is full or a commit failed (the SDKs retry
those).

A request's whole body is read before it takes one of the decode slots, so a slow client holds
only its connection and the bytes it sent (counted as they arrive against
:class:`~ophiond.serving.BodyBudget`, which cuts off the slowest body when it is full), never a
slot; the connection itself is bounded in time and number by ``ophiond.serving``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from ophiond.config import ListenAddress
from ophiond.errors import (
    BodyRefused,
    GzipRefused,
    InvalidPayload,
    OphionError,
    QueueFull,
    RequestRefused,
    StoreError,
    WriterStopped,
)
from ophiond.model import Signal
from ophiond.otlp.compression import gunzip
from ophiond.otlp.decode import encode_response
from ophiond.otlp.ingest import Ingest
from ophiond.otlp.limits import varint
from ophiond.serving import (
    BodyBudget,
    BodyHold,
    ClientLimits,
    ConnectionShut,
    RequestTimeout,
    ServerThread,
    TrackedHandler,
    TrackedServer,
    bind_tcp,
    body_framing,
)

log = logging.getLogger(__name__)

_PATHS = {"/v1/traces": Signal.TRACES, "/v1/metrics": Signal.METRICS, "/v1/logs": Signal.LOGS}
_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
_JSON_TYPE = "application/json"
# gRPC status codes used in the google.rpc.Status bodies.
_INVALID_ARGUMENT, _DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED = 3, 4, 8
_UNIMPLEMENTED, _INTERNAL, _UNAVAILABLE, _UNAUTHENTICATED = 12, 13, 14, 16
_STATUS_CODES = {
    HTTPStatus.REQUEST_TIMEOUT: _DEADLINE_EXCEEDED,
    HTTPStatus.NOT_IMPLEMENTED: _UNIMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE: _UNAVAILABLE,
}
# Retry-After is spread over a few seconds: SDKs that honour it would otherwise all come back
# at the same instant and find the queue full again.
_RETRY_AFTER_S = (1, 3)
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Requests decoded at once; beyond this the receiver answers 503 instead of piling up memory.
_MAX_CONCURRENT = 64
# Bytes of request bodies held at once (received so far, or whole and waiting for a slot or
# their commit), as multiples of max_request_size: in all, and from one client address.
_BODY_BUDGET = 8
_BODY_BUDGET_PER_ADDRESS = 2
# A rejected oversized body is read and discarded up to this many times the limit, so the
# client sees the 413 instead of a reset connection; past it the connection is just closed.
_DRAIN_FACTOR = 4
# Bytes of a body read (and counted in the body budget) at a time.
_READ_SIZE = 64 * 1024


class _Reply(Exception):
    """Ends a request early with an HTTP status and a google.rpc.Status body."""

    def __init__(self, status: HTTPStatus, code: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close = status, code, message, close


def _status_body(code: int, message: str, as_json: bool) -> bytes:
    if as_json:
        return json.dumps({"code": code, "message": message}).encode()
    # google.rpc.Status { int32 code = 1; string message = 2; } written by hand: the message
    # type is not part of opentelemetry-proto, and it is two fields.
    text = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ophiond"
    server: _Server
    as_json = False  # the request's encoding, which its error answers use too
    body_hold: BodyHold  # what the request's body holds of the server's body budget

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"use POST\n", "text/plain", {"Allow": "POST"})

    def refuse(self, status: HTTPStatus, message: str) -> None:
        self._error(
            _Reply(status, _STATUS_CODES.get(status, _INVALID_ARGUMENT), message, close=True),
            self.as_json,
        )

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.as_json = False
        self.body_hold = self.server.bodies.hold(self.client_address[0], self.reader.cut)
        try:
            signal = self._check_headers()
            raw = self._read_body()
            self.body_hold.received()
            self.request_received()
            # The slot is taken only now that the whole body is here: however slowly a client
            # sends, it never holds one.
            if not self.server.slots.acquire(blocking=False):
                raise _Reply(
                    HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, "too many requests at once"
                )
            try:
                body = self._decompress(raw)
                batch = self.server.ingest.export(signal, body, self.as_json)
            finally:
                self.server.slots.release()
            response = encode_response(signal, batch, self.as_json)
            self._send(HTTPStatus.OK, response, _JSON_TYPE if self.as_json else _PROTOBUF_TYPES[0])
        except _Reply as reply:
            self._error(reply, self.as_json)
        except RequestTimeout as e:
            self.refuse(HTTPStatus.REQUEST_TIMEOUT, e.message)
        except BodyRefused as e:
            self.server.notices.warn(
                "BODY_BUDGET",
                f"OTLP/HTTP: refused a request body from {self.client_address[0]}: {e.message}",
            )
            self.refuse(e.http_status, e.message)
        except ConnectionShut:
            self.close_connection = True  # by the server itself: nothing to answer
        except RequestRefused as e:
            self.refuse(e.http_status, e.message)
        except InvalidPayload as e:
            self._error(_Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, e.message), self.as_json)
        except (QueueFull, WriterStopped) as e:
            self._error(
                _Reply(HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, e.message), self.as_json
            )
        except StoreError as e:
            self._error(
                _Reply(HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, f"not stored: {e.message}"),
                self.as_json,
            )
        except (OSError, OphionError) as e:
            log.warning("OTLP/HTTP request from %s failed: %s", self.client_address[0], e)
            self.close_connection = True
        finally:
            self.body_hold.release()

    def _check_headers(self) -> Signal:
        """What can be refused before the body is read: path, ingest key, media type."""
        signal = _PATHS.get(self.path.split("?", 1)[0])
        if signal is None:
            raise _Reply(HTTPStatus.NOT_FOUND, 5, f"no OTLP endpoint at {self.path}", close=True)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        self.as_json = content_type == _JSON_TYPE
        if not self.server.ingest.authorized(self.headers.get("Authorization")):
            raise _Reply(
                HTTPStatus.UNAUTHORIZED, _UNAUTHENTICATED, "missing or wrong ingest key", True
            )
        if not self.as_json and content_type not in _PROTOBUF_TYPES:
            raise _Reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                _INVALID_ARGUMENT,
                f"unsupported Content-Type {content_type or '(none)'!r}; "
                "use application/x-protobuf or application/json",
                close=True,
            )
        if self._encoding() not in ("identity", "gzip"):
            raise _Reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                _INVALID_ARGUMENT,
                f"unsupported Content-Encoding {self._encoding()!r}; use gzip or none",
                close=True,
            )
        return signal

    # -- body --------------------------------------------------------------------------------

    def _encoding(self) -> str:
        return (self.headers.get("Content-Encoding") or "identity").strip().lower()

    def _read_body(self) -> bytes:
        limit = self.server.max_request_size
        framing = body_framing(self.headers)
        if framing.chunked:
            return self._read_chunked(limit)
        length = framing.length
        if length is None:
            raise _Reply(
                HTTPStatus.LENGTH_REQUIRED, _INVALID_ARGUMENT, "Content-Length required", True
            )
        if length > limit:
            self._discard(length)
            raise self._too_large(limit)
        raw = self._receive(length)
        if len(raw) < length:
            raise _Reply(
                HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "body shorter than Content-Length", True
            )
        return raw

    def _receive(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body (fewer if the client stops), each read counted in
        the body budget as it arrives: the length a client announces takes nothing, so a slow
        client holds only what it has sent."""
        parts = []
        left = size
        while left:
            part = self.rfile.read1(min(left, _READ_SIZE))
            if not part:
                break
            self.body_hold.take(len(part))
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def _decompress(self, raw: bytes) -> bytes:
        if self._encoding() != "gzip":
            return raw
        try:
            return gunzip(raw, self.server.max_request_size)
        except GzipRefused as e:
            if e.too_large:
                raise _Reply(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _RESOURCE_EXHAUSTED, e.message
                ) from None
            raise _Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, e.message) from None

    def _too_large(self, limit: int) -> _Reply:
        return _Reply(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            _RESOURCE_EXHAUSTED,
            f"request body larger than {limit} bytes (max_request_size); send smaller batches",
            close=True,
        )

    def _discard(self, length: int) -> None:
        if length > self.server.max_request_size * _DRAIN_FACTOR:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        # Chunk-size lines and trailers count too: a client sending them without end would
        # otherwise keep its deadline moving (it grows with every byte received).
        framing = 0
        while True:
            line = self.rfile.readline(1024)
            framing += len(line)
            size_text = line.split(b";")[0].strip()
            if not _HEX_RE.fullmatch(size_text):
                raise _Reply(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "bad chunked encoding", True
                )
            size = int(size_text, 16)
            if size == 0:
                while (trailer := self.rfile.readline(1024)) not in (b"\r\n", b"\n", b""):
                    framing += len(trailer)
                    if framing > limit:
                        raise self._too_large(limit)
                return b"".join(parts)
            total += size
            if total > limit or framing > limit:
                raise self._too_large(limit)
            chunk = self._receive(size)
            if len(chunk) != size:
                raise _Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "truncated chunk", True)
            parts.append(chunk)
            framing += len(self.rfile.readline(16))

    # -- answers -----------------------------------------------------------------------------

    def _error(self, reply: _Reply, as_json: bool) -> None:
        headers = {}
        if reply.status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers["Retry-After"] = str(random.randint(*_RETRY_AFTER_S))
        if reply.close:
            headers["Connection"] = "close"
            self.close_connection = True
        body = _status_body(reply.code, reply.message, as_json)
        self._send(reply.status, body, _JSON_TYPE if as_json else _PROTOBUF_TYPES[0], headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.server.stopping:
            headers = {**(headers or {}), "Connection": "close"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(TrackedServer, ThreadingHTTPServer):
    daemon_threads = False  # stop() waits for requests in flight: they wait for their commit
    block_on_close = True
    ingest: Ingest
    max_request_size: int
    slots: threading.BoundedSemaphore
    bodies: BodyBudget


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpReceiver(ServerThread):
    """The OTLP/HTTP server on its own thread; :attr:`address` is the bound address."""

    def __init__(
        self,
        ingest: Ingest,
        listen: ListenAddress,
        max_request_size: int,
        limits: ClientLimits,
    ) -> None:
        server = bind_tcp(_Server, _Server6, listen, _Handler, "OTLP/HTTP", "--http-listen")
        server.ingest = ingest
        server.max_request_size = max_request_size
        server.slots = threading.BoundedSemaphore(_MAX_CONCURRENT)
        server.bodies = BodyBudget(
            _BODY_BUDGET * max_request_size, _BODY_BUDGET_PER_ADDRESS * max_request_size
        )
        super().__init__(server, "ophion-http", "OTLP/HTTP", limits)
        self.address = ListenAddress(listen.host, server.server_address[1])

    def start(self) -> None:
        super().start()
        log.info("OTLP/HTTP listening on %s", self.address)
