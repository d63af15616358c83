"""Threaded HTTP serving shared by the OTLP/HTTP receiver and the local API.

Every client gets a bounded share of a server, whatever it sends and before anything checks
who it is (see docs/architecture.md, "Slow and greedy clients"):

- Time. The request line and headers must arrive within ``client_header_timeout`` of the
  connection opening (on a kept-alive connection, of the request's first byte); a body within
  ``client_body_timeout`` plus one second per ``client_body_min_rate`` bytes received, and
  within six times ``client_body_timeout`` in all, like Apache's mod_reqtimeout
  (``body=20-120,MinRate=500``); no read waits more than 30 s. A late client is answered 408
  and disconnected. All reads go through :class:`RequestReader`, which gives each ``recv``
  only the time left, so trickling a byte at a time does not stretch it.
- Connections. At most 256 per server and ``max_connections_per_address`` per client address.
  At a cap, the connection that has waited longest for its next request is closed to make
  room (as nginx reuses idle keep-alive connections); only when none waits is the new one
  closed. A connection whose next request has arrived, read or not, does not wait. The listen
  backlog holds 1,024 connections, so a burst of refused ones does not crowd out other
  clients' connection attempts.
- Memory. :class:`BodyBudget` bounds the bytes of request bodies held at once, in all and per
  client address (the OTLP receiver reads a whole body before it takes a decode slot). A body
  counts the bytes it has received, not the length it claims, and when the budget is full the
  body arriving slowest is cut off, so slow clients cannot keep the budget from fast ones.

A stop does not wait for clients: connections that have not finished sending their request are
shut at once, and busy ones close right after their answer.
"""

from __future__ import annotations

import fcntl
import io
import logging
import re
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from socketserver import BaseServer
from typing import TYPE_CHECKING, Any, TypeVar

from ophiond.config import ListenAddress
from ophiond.errors import BodyRefused, OphionError, RequestRefused

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

# Connections served at once per server.
MAX_CONNECTIONS = 256
# Connections the kernel queues until the server accepts them. socketserver's default of 5
# overflows in a burst (say a flood from one address, refused one by one as they are
# accepted), and then other clients' connection attempts are dropped and retried a second or
# more later.
LISTEN_BACKLOG = 1024
# How long a kept-alive connection may wait for its next request, and any single read or write.
IDLE_TIMEOUT_S = 30.0
_READ_BUFFER = 64 * 1024
_DIGITS = re.compile(r"[0-9]+")
_WARNING_INTERVAL_S = 60.0
# The longest a body may take in all, as a multiple of client_body_timeout (mod_reqtimeout's
# maxtimeout: body=20-120). Without it the minimum rate alone lets a client that sends exactly
# 500 bytes a second hold its connection for 11.6 hours with a 20 MiB body; the SDKs' own
# export timeouts (10 s by default, 30 s in the Collector) give up long before two minutes.
BODY_CEILING_FACTOR = 6


@dataclass(frozen=True)
class ClientLimits:
    """What one client may take of a server: the time to send a request, and connections."""

    header_timeout: float
    body_timeout: float
    body_min_rate: int
    max_per_address: int
    idle_timeout: float = IDLE_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS

    @property
    def body_max_time(self) -> float:
        """The longest a body may take, however steadily it comes."""
        return self.body_timeout * BODY_CEILING_FACTOR


class Phase(Enum):
    """Where a connection is in its current request."""

    WAITING = "waiting for a request"
    HEADERS = "receiving the request line and headers"
    BODY = "receiving the body"
    ANSWERING = "answering"


class RequestTimeout(TimeoutError):
    """A client took too long to send its request, or part of it.

    A ``TimeoutError``, so that the standard library's request loop closes the connection as
    for any timed-out read; :attr:`phase` says which part was late.
    """

    def __init__(self, phase: Phase, message: str) -> None:
        super().__init__(message)
        self.phase = phase
        self.message = message


class ConnectionShut(ConnectionAbortedError):
    """The server shut the connection itself: to make room for another, or to stop."""


@dataclass(frozen=True)
class BodyFraming:
    """How a request's body is delimited: chunked, by a Content-Length, or not at all."""

    chunked: bool = False
    length: int | None = None


def body_framing(headers: Message) -> BodyFraming:
    """Read the body's framing from ``headers``; :class:`RequestRefused` when it is ambiguous.

    Two Content-Length headers, Content-Length with Transfer-Encoding, or a transfer coding
    other than exactly ``chunked`` may be read one way by a proxy in front of the daemon and
    another way here (request smuggling, RFC 9112 section 6.3), so they are refused.
    """
    codings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if codings:
        if lengths:
            raise RequestRefused(
                HTTPStatus.BAD_REQUEST,
                "both Content-Length and Transfer-Encoding; send one of them",
            )
        if len(codings) > 1 or codings[0].strip().lower() != "chunked":
            raise RequestRefused(
                HTTPStatus.NOT_IMPLEMENTED,
                f"Transfer-Encoding {', '.join(codings)!r} is not supported; "
                "send chunked or a Content-Length",
            )
        return BodyFraming(chunked=True)
    if len(lengths) > 1:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "more than one Content-Length header")
    if not lengths:
        return BodyFraming()
    if not _DIGITS.fullmatch(lengths[0].strip()):
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    return BodyFraming(length=int(lengths[0]))


class RequestReader(io.RawIOBase):
    """A connection's socket as its handler reads it: each read may take only the time left
    before the deadline of the part of the request being read."""

    def __init__(self, sock: socket.socket, limits: ClientLimits) -> None:
        super().__init__()
        self._sock = sock
        self._limits = limits
        self.phase = Phase.WAITING
        self.waiting_since = time.monotonic()
        # A new connection's first request must be in within header_timeout of the accept.
        self._deadline = self.waiting_since + limits.header_timeout
        self._kept_alive = False
        self._body_started = 0.0
        self._body_bytes = 0
        self.expired: RequestTimeout | None = None
        self.shut = False  # set before the server shuts the socket under the reader
        self.cut_reason: str | None = None  # set when the body budget cuts the body off

    def readable(self) -> bool:
        return True

    def await_request(self) -> None:
        """Wait for the next request, up to ``idle_timeout`` on a kept-alive connection."""
        self.expired = None
        if self.phase is Phase.WAITING:
            return  # a new connection: its deadline runs from the accept
        self.phase = Phase.WAITING
        self.waiting_since = time.monotonic()
        self._deadline = self.waiting_since + self._limits.idle_timeout
        self._kept_alive = True

    def begin_body(self) -> None:
        """The headers are in; what follows is the body, due at the minimum rate."""
        self.phase = Phase.BODY
        self._body_started = time.monotonic()
        self._body_bytes = 0

    def end_request(self) -> None:
        """The request is read; the connection is busy answering it."""
        if self.phase is not Phase.ANSWERING:
            self.phase = Phase.ANSWERING
            self._sock.settimeout(self._limits.idle_timeout)  # for the writes of the answer

    def cut(self, reason: str) -> None:
        """Stop the body being read, from another thread: the handler's read returns at once
        and raises :class:`BodyRefused`, and the handler can still answer."""
        self.cut_reason = reason
        try:
            self._sock.shutdown(socket.SHUT_RD)  # wakes a recv waiting on the socket
        except OSError:
            pass  # the client closed it meanwhile

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.cut_reason is not None:
            raise BodyRefused(self.cut_reason)
        deadline = self._current_deadline()
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._expire()
        self._sock.settimeout(min(left, self._limits.idle_timeout))
        try:
            if self.phase is Phase.WAITING and self._sock.recv(1, socket.MSG_PEEK):
                # A request has come: the connection is busy from now on, before its first
                # bytes leave the socket's buffer (see _Connection.waiting).
                self.phase = Phase.HEADERS
                if self._kept_alive:
                    self._deadline = time.monotonic() + self._limits.header_timeout
            received = self._sock.recv_into(buffer)
        except TimeoutError:
            raise self._expire(stalled=time.monotonic() < deadline) from None
        if self.cut_reason is not None:
            raise BodyRefused(self.cut_reason)
        if not received and self.shut:
            # Not the end of the request: a request cut short must not be taken as whole.
            raise ConnectionShut(f"the connection was closed while {self.phase.value}")
        if self.phase is Phase.BODY:
            self._body_bytes += received
        return received

    def _current_deadline(self) -> float:
        limits = self._limits
        if self.phase is Phase.BODY:
            earned = limits.body_timeout + self._body_bytes / limits.body_min_rate
            return self._body_started + min(earned, limits.body_max_time)
        if self.phase is Phase.ANSWERING:
            return time.monotonic() + limits.idle_timeout
        return self._deadline

    def _expire(self, stalled: bool = False) -> RequestTimeout:
        limits = self._limits
        if self.phase is Phase.WAITING:
            message = "no request came"
        elif stalled:
            message = f"nothing came for {limits.idle_timeout:g} s while {self.phase.value}"
        elif self.phase is Phase.HEADERS:
            message = (
                f"the request line and headers did not arrive within "
                f"{limits.header_timeout:g} s (client_header_timeout)"
            )
        else:
            elapsed = time.monotonic() - self._body_started
            message = (
                f"the request body came too slowly ({self._body_bytes} bytes in {elapsed:.0f} s): "
                f"a body may take client_body_timeout ({limits.body_timeout:g} s) plus 1 s per "
                f"client_body_min_rate ({limits.body_min_rate}) bytes received, and "
                f"{limits.body_max_time:g} s at most "
                f"({BODY_CEILING_FACTOR} times client_body_timeout)"
            )
        self.expired = RequestTimeout(self.phase, message)
        return self.expired


class TrackedHandler(BaseHTTPRequestHandler):
    """A request handler whose reads keep to its server's :class:`ClientLimits`.

    Subclasses call :meth:`request_received` once they have read the body, and answer errors
    in their own format in :meth:`refuse`.
    """

    server: TrackedServer
    reader: RequestReader
    answered = False

    def setup(self) -> None:
        super().setup()
        # Reads go through the reader instead of the socket file setup() made.
        self.rfile.close()
        self.reader = RequestReader(self.connection, self.server.client_limits)
        self.rfile = io.BufferedReader(self.reader, _READ_BUFFER)
        self.server.attach(self)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self.reader.begin_body()
        return True

    def request_received(self) -> None:
        """Say that the request's body is read: the connection is now busy answering."""
        self.reader.end_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.answered = True
        self.reader.end_request()
        super().send_response(code, message)

    def handle_one_request(self) -> None:
        self.reader.await_request()
        self.answered = False
        # What an answer needs when the request line itself never arrived.
        self.request_version, self.requestline, self.command = self.protocol_version, "", ""
        try:
            super().handle_one_request()
        except ConnectionError as e:
            # The client left, or the server shut the connection (ConnectionShut): nothing to
            # answer, and no traceback for the log.
            log.debug(
                "%s: connection from %s ended: %s", self.server.label, self.address_string(), e
            )
            self.close_connection = True
        finally:
            if self.server.stopping:
                self.close_connection = True
        late = self.reader.expired
        if late is None or late.phase is Phase.WAITING:
            return  # an idle connection timed out: closed without a word, as usual
        self.close_connection = True
        self.server.notices.warn(
            late.phase.name,
            f"{self.server.label}: closed a connection from {self.address_string()}: "
            f"{late.message}",
        )
        if not self.answered:
            try:
                self.refuse(HTTPStatus.REQUEST_TIMEOUT, late.message)
            except OSError:
                pass  # the client is gone already

    def refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer ``status`` with ``message`` and close the connection (subclasses answer in
        their own error format)."""
        body = (message + "\n").encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


@dataclass(eq=False)
class _Connection:
    sock: Any
    address: str
    handler: TrackedHandler | None = None

    def waiting(self) -> bool:
        """Idle: waiting for its next request, of which no byte has arrived.

        Bytes in the socket's buffer that the handler has not read yet (its thread may not
        have run since they came, on a busy host) are a request the client has sent: closing
        the connection would drop it, so such a connection is busy.
        """
        if self.handler is None or self.handler.reader.phase is not Phase.WAITING:
            return False
        if _bytes_pending(self.sock):
            return False
        # The phase again, after the bytes: the reader leaves WAITING before it takes a
        # request's first bytes from the buffer, so a connection seen with none pending and
        # still WAITING afterwards has none in hand either.
        return self.handler.reader.phase is Phase.WAITING

    def shut(self) -> None:
        if self.handler is not None:
            self.handler.reader.shut = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client closed it meanwhile


def _bytes_pending(sock: socket.socket) -> int:
    """Bytes received on ``sock`` that nothing has read yet (0 at the end of the stream)."""
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4)
    except OSError:
        return 0  # closed meanwhile: nothing to lose by closing it
    pending: int = struct.unpack("i", answer)[0]
    return pending


class ClientNotices:
    """Warnings about clients a limit stopped, at most one a minute of each kind, so that a
    flood of clients does not flood the log too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quiet_until: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warn(self, kind: str, text: str) -> None:
        """Log ``text`` unless a warning of ``kind`` was logged less than a minute ago."""
        now = time.monotonic()
        with self._lock:
            if now < self._quiet_until.get(kind, 0.0):
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return
            self._quiet_until[kind] = now + _WARNING_INTERVAL_S
            skipped = self._skipped.pop(kind, 0)
        if skipped:
            log.warning("%s (and %d more like it since the last such warning)", text, skipped)
        else:
            log.warning("%s", text)


class TrackedServer(BaseServer):
    """Mixed into a socketserver class before it: connection caps, overall and per client
    address, and the stop of connections that have not sent their request."""

    request_queue_size = LISTEN_BACKLOG
    client_limits: ClientLimits
    label: str  # for the log: "OTLP/HTTP", "the API"

    def server_activate(self) -> None:
        self._connections: dict[Any, _Connection] = {}  # by socket
        self._per_address: dict[str, int] = {}
        self._connections_lock = threading.Lock()
        self.notices = ClientNotices()
        # Set when a stop begins: busy connections close after their answer, streams end.
        self.stopping_event = threading.Event()
        super().server_activate()

    @property
    def stopping(self) -> bool:
        return self.stopping_event.is_set()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Counted here, in the accepting thread, so that a burst cannot pass the caps before
        # the handlers' threads have started.
        address = str(client_address[0]) if isinstance(client_address, tuple) else ""
        with self._connections_lock:
            refusal = self._make_room(address)
            if refusal is None:
                self._connections[request] = _Connection(request, address)
                self._per_address[address] = self._per_address.get(address, 0) + 1
        if refusal is not None:
            kind, reason = refusal
            self.notices.warn(kind, f"{self.label}: refused a connection: {reason}")
            return False
        return True

    def _make_room(self, address: str) -> tuple[str, str] | None:
        """None when a connection from ``address`` may be served, after closing a waiting one
        if a cap is reached; else the kind of refusal and its reason."""
        limits = self.client_limits
        held = self._per_address.get(address, 0)
        if address and held >= limits.max_per_address:
            if not self._close_longest_waiting(address):
                return "per-address", (
                    f"{address} already has {held} connections open, the most one address may "
                    "have (max_connections_per_address)"
                )
        if len(self._connections) >= limits.max_connections:
            if not self._close_longest_waiting(None):
                return "total", f"all {len(self._connections)} connections are in use"
        return None

    def attach(self, handler: TrackedHandler) -> None:
        """Called by a handler as it starts serving its connection."""
        with self._connections_lock:
            connection = self._connections.get(handler.request)
            if connection is not None:
                connection.handler = handler

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._forget(request)
        super().shutdown_request(request)

    def _forget(self, request: Any) -> None:
        connection = self._connections.pop(request, None)
        if connection is None:
            return
        left = self._per_address[connection.address] - 1
        if left:
            self._per_address[connection.address] = left
        else:
            del self._per_address[connection.address]

    def _close_longest_waiting(self, address: str | None) -> bool:
        """Close the connection (of ``address``, or any) that has waited longest for a request.

        Runs under the lock: a handler closes its socket only after :meth:`shutdown_request`
        has taken the lock, so the socket shut here is still the connection's own.
        """
        waiting = [
            c
            for c in self._connections.values()
            if c.waiting() and (address is None or c.address == address)
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.handler.reader.waiting_since if c.handler else 0.0)
        self._forget(oldest.sock)
        oldest.shut()
        return True

    def close_waiting_connections(self) -> None:
        """For a stop: end connections that have not sent their whole request yet (idle ones,
        slow ones); busy ones close after their answer."""
        self.stopping_event.set()
        with self._connections_lock:
            for connection in self._connections.values():
                handler = connection.handler
                if handler is not None and handler.reader.phase is not Phase.ANSWERING:
                    connection.shut()


class BodyHold:
    """What one request's body holds of a :class:`BodyBudget`: the bytes received so far.

    The handler calls :meth:`take` after each read, :meth:`received` once the body is whole,
    and :meth:`release` when the request is done, whatever happened (in a ``finally``: the
    budget may cut the body off through ``cut`` only until then, while its socket is open).
    """

    def __init__(self, budget: BodyBudget, address: str, cut: Callable[[str], None]) -> None:
        self.address = address
        self.held = 0
        self.started = time.monotonic()
        self.cut_reason: str | None = None
        self._budget = budget
        self._cut = cut

    def take(self, size: int) -> None:
        """Count ``size`` more bytes received; :class:`BodyRefused` when there is no room for
        them, even after cutting off the bodies arriving more slowly than this one."""
        self._budget._take(self, size)

    def received(self) -> None:
        """The whole body is in: it waits for a decode slot or its commit and is never cut off
        now; :class:`BodyRefused` if it was cut off first."""
        self._budget._received(self)

    def release(self) -> None:
        """Give back what the body holds."""
        self._budget._release(self)

    def rate(self, now: float, more: int = 0) -> float:
        """Bytes per second received since the body began (with ``more`` bytes)."""
        elapsed = now - self.started
        return (self.held + more) / elapsed if elapsed > 0 else float("inf")

    def _cut_off(self, reason: str) -> None:
        self.cut_reason = reason
        self._cut(reason)


class BodyBudget:
    """Bytes of request bodies held at once, in all and per client address.

    A body holds the bytes it has received, never the length it announces: a client trickling
    a body holds only what it has sent, so a few of them claiming ``Content-Length: 20MiB``
    cannot take the budget for hours. When a body's next bytes do not fit, the body arriving
    slowest (fewest bytes per second since it began) among those still arriving from the same
    address (at the per-address bound) or from any (at the total) is cut off, with a 503
    worth retrying; if that is the one asking, it is refused itself. So a full budget costs
    the slowest clients, not the fast exporters that come next. Whole bodies waiting for a
    decode slot or their commit are never cut off.
    """

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._held = 0
        self._by_address: dict[str, int] = {}
        self._receiving: set[BodyHold] = set()
        self._lock = threading.Lock()

    def hold(self, address: str, cut: Callable[[str], None]) -> BodyHold:
        """A new body from ``address``, holding nothing yet; ``cut(reason)`` stops it being
        received when the budget cuts it off (from another request's thread)."""
        hold = BodyHold(self, address, cut)
        with self._lock:
            self._receiving.add(hold)
        return hold

    def _take(self, hold: BodyHold, size: int) -> None:
        with self._lock:
            while True:
                if hold.cut_reason is not None:
                    raise BodyRefused(hold.cut_reason)
                mine = self._by_address.get(hold.address, 0)
                if mine + size > self.per_address:
                    bound = f"{self.per_address} bytes from one address"
                    rivals = [h for h in self._receiving if h.address == hold.address]
                elif self._held + size > self.total:
                    bound = f"{self.total} bytes in all"
                    rivals = list(self._receiving)
                else:
                    break
                now = time.monotonic()
                holders = [h for h in rivals if h is not hold and h.held]
                slowest = min(holders, key=lambda h: h.rate(now), default=None)
                if slowest is None or slowest.rate(now) >= hold.rate(now, size):
                    hold.cut_reason = (
                        f"too many request bodies being received at once ({bound}); retry later"
                    )
                    self._give_back(hold)
                    raise BodyRefused(hold.cut_reason)
                self._cut(slowest, now, bound)
            hold.held += size
            self._held += size
            self._by_address[hold.address] = mine + size

    def _cut(self, hold: BodyHold, now: float, bound: str) -> None:
        elapsed = now - hold.started
        reason = (
            f"too many request bodies being received at once ({bound}): this one was cut off, "
            f"arriving slowest ({hold.held} bytes in {elapsed:.0f} s); retry later"
        )
        self._give_back(hold)
        hold._cut_off(reason)

    def _received(self, hold: BodyHold) -> None:
        with self._lock:
            if hold.cut_reason is not None:
                raise BodyRefused(hold.cut_reason)
            self._receiving.discard(hold)

    def _release(self, hold: BodyHold) -> None:
        with self._lock:
            self._give_back(hold)

    def _give_back(self, hold: BodyHold) -> None:
        self._receiving.discard(hold)
        if not hold.held:
            return
        self._held -= hold.held
        left = self._by_address[hold.address] - hold.held
        if left:
            self._by_address[hold.address] = left
        else:
            del self._by_address[hold.address]
        hold.held = 0


ServerT = TypeVar("ServerT", bound=TrackedServer)


def bind_tcp(
    ipv4: type[ServerT],
    ipv6: type[ServerT],
    listen: ListenAddress,
    handler: type[TrackedHandler],
    what: str,
    flag: str,
) -> ServerT:
    """Bind a TCP server on ``listen`` (IPv6 when the host is); a clear error when it cannot."""
    server_class = ipv6 if ":" in listen.host else ipv4
    try:
        return server_class((listen.host, listen.port), handler)
    except OSError as e:
        raise OphionError(
            f"cannot listen for {what} on {listen}: {e.strerror or e}",
            hint=f"another program may hold the port; choose one with {flag}",
        ) from e


class ServerThread:
    """A tracked server served on a thread of its own, within ``limits``."""

    def __init__(self, server: TrackedServer, name: str, label: str, limits: ClientLimits) -> None:
        server.client_limits = limits
        server.label = label
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=name, kwargs={"poll_interval": 0.2}
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and end streams; close connections still sending their request; wait
        for the requests in flight."""
        self.server.stopping_event.set()
        self.server.shutdown()
        self._thread.join()
        self.server.close_waiting_connections()
        self.server.server_close()
