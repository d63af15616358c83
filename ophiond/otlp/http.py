"""OTLP/HTTP receiver: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` on :4318.

Protobuf and JSON bodies, gzip, answers in the request's encoding. Errors carry a
``google.rpc.Status`` body as the OTLP specification asks: 400 malformed (not retryable),
401 wrong ingest key, 413 too large, 415 wrong media type or encoding, 503 + Retry-After when
the write queue is full or a commit failed (the SDKs retry those).
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import zlib
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from ophiond.config import ListenAddress
from ophiond.errors import OphionError, StoreError
from ophiond.otlp.decode import InvalidPayload, Signal, encode_response
from ophiond.otlp.ingest import Ingest, QueueFull, WriterStopped
from ophiond.serving import ServerThread, TrackedHandler, TrackedServer, bind_tcp

log = logging.getLogger(__name__)

_PATHS = {"/v1/traces": Signal.TRACES, "/v1/metrics": Signal.METRICS, "/v1/logs": Signal.LOGS}
_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
_JSON_TYPE = "application/json"
# gRPC status codes used in the google.rpc.Status bodies.
_INVALID_ARGUMENT, _RESOURCE_EXHAUSTED, _INTERNAL, _UNAVAILABLE, _UNAUTHENTICATED = 3, 8, 13, 14, 16
# Retry-After is spread over a few seconds: SDKs that honour it would otherwise all come back
# at the same instant and find the queue full again.
_RETRY_AFTER_S = (1, 3)
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Requests decoded at once; beyond this the receiver answers 503 instead of piling up memory.
_MAX_CONCURRENT = 64
# A rejected oversized body is read and discarded up to this many times the limit, so the
# client sees the 413 instead of a reset connection; past it the connection is just closed.
_DRAIN_FACTOR = 4


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
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ophiond"
    timeout = 30  # a client that stalls mid-request does not hold a thread for ever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"use POST\n", "text/plain", {"Allow": "POST"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        as_json = False
        try:
            signal = _PATHS.get(self.path.split("?", 1)[0])
            if signal is None:
                raise _Reply(
                    HTTPStatus.NOT_FOUND, 5, f"no OTLP endpoint at {self.path}", close=True
                )
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            as_json = content_type == _JSON_TYPE
            if not self.server.ingest.authorized(self.headers.get("Authorization")):
                raise _Reply(
                    HTTPStatus.UNAUTHORIZED, _UNAUTHENTICATED, "missing or wrong ingest key", True
                )
            if not as_json and content_type not in _PROTOBUF_TYPES:
                raise _Reply(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    _INVALID_ARGUMENT,
                    f"unsupported Content-Type {content_type or '(none)'!r}; "
                    "use application/x-protobuf or application/json",
                    close=True,
                )
            # The slot is taken before the body is read: it bounds the memory of bodies too.
            if not self.server.slots.acquire(blocking=False):
                raise _Reply(
                    HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, "too many requests at once", True
                )
            try:
                batch = self.server.ingest.export(signal, self._read_body(), as_json)
            finally:
                self.server.slots.release()
            response = encode_response(signal, batch, as_json)
            self._send(HTTPStatus.OK, response, _JSON_TYPE if as_json else _PROTOBUF_TYPES[0])
        except _Reply as reply:
            self._error(reply, as_json)
        except InvalidPayload as e:
            self._error(_Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, e.message), as_json)
        except (QueueFull, WriterStopped) as e:
            self._error(_Reply(HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, e.message), as_json)
        except StoreError as e:
            self._error(
                _Reply(HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, f"not stored: {e.message}"),
                as_json,
            )
        except (OSError, OphionError) as e:
            log.warning("OTLP/HTTP request from %s failed: %s", self.client_address[0], e)
            self.close_connection = True

    # -- body --------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        limit = self.server.max_request_size
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _Reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                _INVALID_ARGUMENT,
                f"unsupported Content-Encoding {encoding!r}; use gzip or none",
                close=True,
            )
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raw = self._read_chunked(limit)
        else:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                raise _Reply(
                    HTTPStatus.LENGTH_REQUIRED, _INVALID_ARGUMENT, "Content-Length required", True
                )
            try:
                length = int(length_header)
            except ValueError:
                raise _Reply(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "bad Content-Length", True
                ) from None
            if length < 0:
                raise _Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "bad Content-Length", True)
            if length > limit:
                self._discard(length)
                raise self._too_large(limit)
            raw = self.rfile.read(length)
            if len(raw) < length:
                raise _Reply(
                    HTTPStatus.BAD_REQUEST,
                    _INVALID_ARGUMENT,
                    "body shorter than Content-Length",
                    True,
                )
        if encoding == "gzip":
            return self._gunzip(raw, limit)
        return raw

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
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";")[0].strip()
            if not _HEX_RE.fullmatch(size_text):
                raise _Reply(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "bad chunked encoding", True
                )
            size = int(size_text, 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                raise self._too_large(limit)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "truncated chunk", True)
            parts.append(chunk)
            self.rfile.readline(16)

    def _gunzip(self, raw: bytes, limit: int) -> bytes:
        # Decompress with a ceiling so that a gzip bomb costs at most `limit` bytes of memory.
        # A body may hold several gzip members one after the other; all are read.
        out: list[bytes] = []
        total = 0
        while raw:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                data = inflater.decompress(raw, limit + 1 - total)
            except zlib.error as e:
                raise _Reply(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, f"invalid gzip body: {e}"
                ) from None
            total += len(data)
            if total > limit or inflater.unconsumed_tail:
                raise self._too_large(limit)
            if not inflater.eof:
                raise _Reply(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "truncated gzip body")
            out.append(data)
            raw = inflater.unused_data
        return b"".join(out)

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


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpReceiver(ServerThread):
    """The OTLP/HTTP server on its own thread; :attr:`address` is the bound address."""

    def __init__(self, ingest: Ingest, listen: ListenAddress, max_request_size: int) -> None:
        server = bind_tcp(_Server, _Server6, listen, _Handler, "OTLP/HTTP", "--http-listen")
        server.ingest = ingest
        server.max_request_size = max_request_size
        server.slots = threading.BoundedSemaphore(_MAX_CONCURRENT)
        super().__init__(server, "ophion-http")
        self.address = ListenAddress(listen.host, server.server_address[1])

    def start(self) -> None:
        super().start()
        log.info("OTLP/HTTP listening on %s", self.address)
