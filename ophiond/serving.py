"""Threaded HTTP serving shared by the OTLP/HTTP receiver and the local API.

Both keep track of their connections so that a stop does not wait for clients: idle keep-alive
connections are shut at once, and busy ones are closed right after their answer. The number
of connections is capped, so a flood of clients cannot make unbounded threads.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler
from socketserver import BaseServer
from typing import Any, TypeVar

from ophiond.config import ListenAddress
from ophiond.errors import OphionError

# Connections served at once per server; beyond it new ones are closed straight away.
MAX_CONNECTIONS = 256


class TrackedHandler(BaseHTTPRequestHandler):
    """A request handler that tells its server when it is busy with a request."""

    server: TrackedServer
    busy = False

    def setup(self) -> None:
        super().setup()
        self.server.track(self, add=True)

    def finish(self) -> None:
        self.server.track(self, add=False)
        super().finish()

    def parse_request(self) -> bool:
        # From the first header line on, the connection is in use; before that it is idle.
        self.busy = True
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.busy = False
            if self.server.stopping:
                self.close_connection = True


class TrackedServer(BaseServer):
    """Mixed into a socketserver class before it: connection tracking and a connection cap."""

    def server_activate(self) -> None:
        self._connections: set[TrackedHandler] = set()
        self._connections_lock = threading.Lock()
        # Set when a stop begins: busy connections close after their answer, streams end.
        self.stopping_event = threading.Event()
        super().server_activate()

    @property
    def stopping(self) -> bool:
        return self.stopping_event.is_set()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._connections_lock:
            return len(self._connections) < MAX_CONNECTIONS

    def track(self, handler: TrackedHandler, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(handler)
            else:
                self._connections.discard(handler)

    def close_idle_connections(self) -> None:
        """For a stop: end idle keep-alive connections; busy ones close after their answer."""
        self.stopping_event.set()
        with self._connections_lock:
            idle = [h for h in self._connections if not h.busy]
        for handler in idle:
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it meanwhile


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
    """A tracked server served on a thread of its own."""

    def __init__(self, server: TrackedServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=name, kwargs={"poll_interval": 0.2}
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and end streams; close idle connections; wait for requests in flight."""
        self.server.stopping_event.set()
        self.server.shutdown()
        self._thread.join()
        self.server.close_idle_connections()
        self.server.server_close()
