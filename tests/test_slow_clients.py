"""Slow and greedy HTTP clients get a bounded share of a server, never everyone's.

An attacker on 127.0.0.2 (every 127/8 address is this host's loopback) floods the OTLP/HTTP
receiver or the TCP API with connections that send their headers a line at a time, or their
body a byte at a time. A client on 127.0.0.1 must keep being answered, and the slow
connections must be cut off at their deadline. The deadlines are 2 s here (10 and 20 s by
default) to keep the tests short; the assertions are about outcomes, with generous bounds, so
that a busy machine does not fail them. Nothing waits a fixed time for the daemon to do
something: the tests wait for what they can see (a connection turned away, bytes acknowledged
by the daemon's end of the socket).
"""

from __future__ import annotations

import fcntl
import http.client
import itertools
import resource
import selectors
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import RunningDaemon, make_sdk_spans, recorded
from test_api_auth import admin_token, call
from test_bad_input import good_body, send_http

ATTACKER = "127.0.0.2"
PROTOBUF = "application/x-protobuf"
SHORT_DEADLINES = {
    "OPHION_CLIENT_HEADER_TIMEOUT": "2s",
    "OPHION_CLIENT_BODY_TIMEOUT": "2s",
    "OPHION_CLIENT_BODY_MIN_RATE": "1000",
}
# How long a good client keeps sending requests, every half second, once a flood is in.
FLOOD_S = 3
SLOW_HEADERS = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n")
# Long enough that the body never completes at a byte every half second.
SLOW_BODY = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    b"Content-Length: 100000\r\n\r\n",
    b"\x00",
)


class Flood:
    """``count`` connections from ``sources`` (:data:`ATTACKER`, or several addresses in turn)
    that each send ``head``, then ``drip`` every ``interval`` seconds until the daemon answers
    or closes them; then they are opened again (up to 100 at a time) unless ``reconnect`` is
    false, as an attacker's would. :attr:`answers` holds what each got at its end (``b""``
    when closed without a word, or reset)."""

    def __init__(
        self,
        target: tuple[str, int],
        count: int,
        head: bytes,
        drip: bytes,
        *,
        sources: Sequence[str] = (ATTACKER,),
        interval: float = 0.5,
        reconnect: bool = True,
    ) -> None:
        self.target, self.count, self.head, self.drip = target, count, head, drip
        self.interval = interval
        self.answers: list[bytes] = []
        self._sources = itertools.cycle(sources)
        self._connecting: set[socket.socket] = set()
        self._open: set[socket.socket] = set()
        self._sent: dict[socket.socket, int] = {}
        self._selector = selectors.DefaultSelector()
        self._reconnect = reconnect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood")

    def __enter__(self) -> Flood:
        _allow_open_files(self.count + 200)
        for _ in range(self.count):
            self._connect()
        # Connecting without blocking, so that a full listen backlog (connections waiting for
        # the SYN to be sent again) cannot make opening them take minutes.
        deadline = time.monotonic() + 20
        while self._connecting and time.monotonic() < deadline:
            self._step(timeout=0.5)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._connecting | self._open:
            sock.close()
        self._selector.close()

    @property
    def still_open(self) -> int:
        """Connections the daemon has neither answered nor closed."""
        return len(self._open)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Wait until ``condition()`` holds (checked every 0.1 s), or fail saying ``what``."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
            time.sleep(0.1)

    def wait_until_turned_away(self) -> None:
        """Wait until the daemon has answered or closed one of the connections: it has taken
        in as many as one address may have and refuses the others (or has cut one off)."""
        self.wait_for(lambda: bool(self.answers), "turned away")

    def wait_until_delivered(self) -> None:
        """Wait until every connection is open and its ``head`` is at the daemon's end."""

        def delivered(sock: socket.socket) -> bool:
            return self._sent.get(sock, 0) - _unacknowledged(sock) >= len(self.head)

        self.wait_for(
            lambda: not self._connecting and all(map(delivered, list(self._open))),
            "delivered",
        )

    def wait_until_all_closed(self, timeout: float) -> None:
        """Stop opening connections again; wait until the daemon has ended every one."""
        self._reconnect = False
        deadline = time.monotonic() + timeout
        while (self._open or self._connecting) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self._open, f"{len(self._open)} slow connections are still open"

    def _run(self) -> None:
        next_drip = time.monotonic() + self.interval
        while not self._stop.is_set():
            self._step(timeout=max(0.0, next_drip - time.monotonic()))
            if time.monotonic() < next_drip:
                continue
            next_drip += self.interval
            for sock in list(self._open):
                try:
                    self._sent[sock] += sock.send(self.drip)
                except OSError:
                    self._end(sock)
            missing = self.count - len(self._open) - len(self._connecting)
            for _ in range(min(missing, 100) if self._reconnect else 0):
                self._connect()

    def _connect(self) -> None:
        sock = socket.socket()
        sock.bind((next(self._sources), 0))
        sock.setblocking(False)
        sock.connect_ex(self.target)
        self._connecting.add(sock)
        self._selector.register(sock, selectors.EVENT_WRITE)

    def _step(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout=timeout):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if sock in self._open:
                self._end(sock)  # an answer, or the end of the connection
                continue
            self._connecting.discard(sock)
            try:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise ConnectionRefusedError
                self._sent[sock] = sock.send(self.head)
            except OSError:
                self._selector.unregister(sock)
                sock.close()
                continue
            self._open.add(sock)
            self._selector.modify(sock, selectors.EVENT_READ)

    def _end(self, sock: socket.socket) -> None:
        answer = b""
        sock.settimeout(2)
        try:
            while part := sock.recv(65536):  # to the end: the daemon closes after answering
                answer += part
        except OSError:
            pass  # reset
        self.answers.append(answer)
        self._selector.unregister(sock)
        self._open.discard(sock)
        self._sent.pop(sock, None)
        sock.close()


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that the other end has not acknowledged yet (Linux's SIOCOUTQ):
    0 once the daemon's socket holds them, read or not."""
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    except OSError:
        return 0  # closed: nothing more will be delivered
    pending: int = struct.unpack("i", answer)[0]
    return pending


def _wait_until_delivered(socks: list[socket.socket], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(map(_unacknowledged, socks)):
        assert time.monotonic() < deadline, "the daemon's end did not take the bytes sent"
        time.sleep(0.01)


def _allow_open_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"this test needs {count} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def _every_half_second(seconds: float) -> Iterator[int]:
    """0, 1, 2, ... every half second for ``seconds``."""
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        yield count
        count += 1
        time.sleep(0.5)


def _target(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _timeouts(answers: list[bytes]) -> list[bytes]:
    return [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]


def _body_head(length: int) -> bytes:
    return (
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


# Bodies trickled at the minimum rate: 100 bytes every 0.1 s against client_body_min_rate 1000.
# client_body_timeout is 5 s, so that a trickler the busy machine stalls for a moment is not
# cut off for being late, which is not what these tests are about.
MIN_RATE = {
    "OPHION_CLIENT_HEADER_TIMEOUT": "2s",
    "OPHION_CLIENT_BODY_TIMEOUT": "5s",
    "OPHION_CLIENT_BODY_MIN_RATE": "1000",
}
MIN_RATE_DRIP, MIN_RATE_INTERVAL = b"\0" * 100, 0.1


@pytest.mark.slow
def test_a_thousand_slow_header_connections_leave_otlp_http_exports_answered(
    daemon_factory: Any,
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    daemon: RunningDaemon = daemon_factory(env=SHORT_DEADLINES)
    verdicts = []
    head, drip = SLOW_HEADERS
    with Flood(_target(daemon.listen["http"]), 1000, head, drip) as flood:
        flood.wait_until_turned_away()  # the daemon holds all it lets one address have
        for i in _every_half_second(FLOOD_S):
            # A new exporter each time, so a new connection: one kept alive from before the
            # flood would not show whether new ones are still taken.
            exporter, exports = recorded(OTLPSpanExporter(endpoint=daemon.http_url("/v1/traces")))
            began = time.monotonic()
            try:
                exporter.export(make_sdk_spans(3, f"during-flood-{i}", "slow-clients-test"))
            finally:
                exporter.shutdown()
            assert time.monotonic() - began < 5, "an export waited behind the flood"
            verdicts += exports.verdicts
        flood.wait_until_all_closed(timeout=30)
    assert verdicts == ["SUCCESS"] * len(verdicts), daemon.log()[-3000:]
    # The connections the daemon took on were answered 408 at their deadline.
    late = _timeouts(flood.answers)
    assert late, flood.answers[:5]
    assert b"client_header_timeout" in late[0]
    rows = daemon.sql("SELECT count(*) AS n FROM spans WHERE name LIKE 'during-flood-%'")
    assert rows == [{"n": 3 * len(verdicts)}]


@pytest.mark.slow
def test_body_tricklers_hold_no_decode_slot_and_are_cut_off(daemon_factory: Any) -> None:
    daemon: RunningDaemon = daemon_factory(env=SHORT_DEADLINES)
    head, drip = SLOW_BODY
    with Flood(_target(daemon.listen["http"]), 100, head, drip) as flood:
        flood.wait_until_turned_away()  # the daemon holds all it lets one address have
        for _ in _every_half_second(FLOOD_S):
            assert send_http(daemon, good_body(), timeout=30).status == 200
        flood.wait_until_all_closed(timeout=30)
    late = _timeouts(flood.answers)
    assert late, flood.answers[:5]
    assert b"client_body_timeout" in late[0]


@pytest.mark.slow
def test_bodies_trickled_at_the_minimum_rate_hold_only_what_they_sent_of_the_budget(
    daemon_factory: Any,
) -> None:
    # With max_request_size 64 KiB the body budget is 512 KiB in all, 128 KiB per address:
    # eight connections from four addresses announcing 64 KiB each would take all of it, for
    # as long as they keep trickling, if what a body announces were what it holds.
    daemon: RunningDaemon = daemon_factory(env={**MIN_RATE, "OPHION_MAX_REQUEST_SIZE": "64KiB"})
    attackers = [f"127.0.0.{i}" for i in range(2, 6)]
    head = _body_head(64 << 10)
    with Flood(
        _target(daemon.listen["http"]),
        8,
        head,
        MIN_RATE_DRIP,
        sources=attackers,
        interval=MIN_RATE_INTERVAL,
        reconnect=False,
    ) as flood:
        flood.wait_until_delivered()
        for _ in _every_half_second(FLOOD_S):
            reply = send_http(daemon, good_body(), timeout=30)
            assert reply.status == 200, (reply.status, reply.body[:300])
        # The tricklers were receiving all along: none was answered or closed.
        assert flood.still_open == 8, flood.answers


@pytest.mark.slow
def test_a_full_body_budget_cuts_off_the_slowest_body_not_a_fast_export(
    daemon_factory: Any,
) -> None:
    # With max_request_size 8 KiB the budget is 64 KiB in all: sixteen connections from eight
    # addresses, each announcing 8 KiB at the minimum rate (and reconnecting when cut off),
    # fill it in about four seconds, halfway through their bodies.
    daemon: RunningDaemon = daemon_factory(env={**MIN_RATE, "OPHION_MAX_REQUEST_SIZE": "8KiB"})
    attackers = [f"127.0.0.{i}" for i in range(2, 10)]
    with Flood(
        _target(daemon.listen["http"]),
        16,
        _body_head(8 << 10),
        MIN_RATE_DRIP,
        sources=attackers,
        interval=MIN_RATE_INTERVAL,
    ) as flood:
        # A trickler answered 503: the budget is full.
        flood.wait_for(lambda: any(map(_unavailable, flood.answers)), "refused for the budget")
        for _ in _every_half_second(FLOOD_S):
            reply = send_http(daemon, good_body(), timeout=30)
            assert reply.status == 200, (reply.status, reply.body[:300])
    # Every trickler answered was refused for the budget, worth retrying; a trickler asking for
    # more when it is itself the slowest is refused outright, so not every answer names a cut.
    cut = [a for a in flood.answers if _unavailable(a)]
    assert all(b"too many request bodies" in a and b"Retry-After: " in a for a in cut), cut
    assert any(b"this one was cut off, arriving slowest" in a for a in cut), cut


def _unavailable(answer: bytes) -> bool:
    return answer.startswith(b"HTTP/1.1 503 ")


@pytest.mark.slow
def test_a_body_that_keeps_coming_is_cut_off_at_six_times_client_body_timeout(
    daemon_factory: Any,
) -> None:
    daemon: RunningDaemon = daemon_factory(env=SHORT_DEADLINES)  # a body may take 12 s at most
    # Four times the minimum rate, so the rate never cuts it off; the 100 kB would take 25 s.
    began = time.monotonic()
    with Flood(
        _target(daemon.listen["http"]),
        2,
        _body_head(100_000),
        b"\0" * 400,
        interval=0.1,
        reconnect=False,
    ) as flood:
        flood.wait_until_all_closed(timeout=60)
    took = time.monotonic() - began
    late = _timeouts(flood.answers)
    assert len(late) == 2, flood.answers
    assert b"12 s at most (6 times client_body_timeout)" in late[0], late[0]
    assert took >= 11.5


@pytest.mark.slow
def test_a_thousand_slow_header_connections_leave_the_tcp_api_answering(
    daemon_factory: Any,
) -> None:
    daemon: RunningDaemon = daemon_factory("--api-listen", "127.0.0.1:0", env=SHORT_DEADLINES)
    token = admin_token(daemon)
    head = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n"
    with Flood(_target(daemon.listen["api_tcp"]), 1000, head, SLOW_HEADERS[1]) as flood:
        flood.wait_until_turned_away()  # the daemon holds all it lets one address have
        for _ in _every_half_second(FLOOD_S):
            status, body, _ = call(daemon, "GET", "/api/v1/status", token)
            assert status == 200 and body["pid"] == daemon.process.pid
        flood.wait_until_all_closed(timeout=30)
    assert _timeouts(flood.answers)


@contextmanager
def _kept_alive(daemon: RunningDaemon, count: int) -> Iterator[list[http.client.HTTPConnection]]:
    """``count`` connections from the attacker's address, each used once and then left idle."""
    host, port = _target(daemon.listen["http"])
    connections = []
    try:
        for _ in range(count):
            conn = http.client.HTTPConnection(host, port, timeout=30, source_address=(ATTACKER, 0))
            connections.append(conn)
            conn.request("POST", "/v1/traces", good_body(), {"Content-Type": PROTOBUF})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        yield connections
    finally:
        for conn in connections:
            conn.close()


def test_one_address_gets_its_share_of_connections_and_idle_ones_make_room(
    daemon_factory: Any,
) -> None:
    daemon: RunningDaemon = daemon_factory(env={"OPHION_MAX_CONNECTIONS_PER_ADDRESS": "4"})
    host, port = _target(daemon.listen["http"])
    with _kept_alive(daemon, 4), _kept_alive(daemon, 1):
        pass  # the fifth connection was served: the idle one waiting longest made room
    # Four connections busy sending their headers take the address's whole share...
    slow = []
    for _ in range(4):
        sock = socket.create_connection((host, port), timeout=30, source_address=(ATTACKER, 0))
        sock.sendall(SLOW_HEADERS[0])
        slow.append(sock)
    # ...once their first line is at the daemon's end (a connection whose request has come is
    # busy, even before the daemon's thread reads it, on a busy machine)...
    _wait_until_delivered(slow)
    try:
        # ...so a fifth from that address is closed at once, while others are served.
        refused = http.client.HTTPConnection(host, port, timeout=30, source_address=(ATTACKER, 0))
        with pytest.raises(ConnectionError):
            refused.request("POST", "/v1/traces", good_body(), {"Content-Type": PROTOBUF})
            refused.getresponse()
        refused.close()
        assert send_http(daemon, good_body()).status == 200
    finally:
        for sock in slow:
            sock.close()
    assert "max_connections_per_address" in daemon.log()
