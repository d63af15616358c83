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
from typing import Any

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

    stopping = False

    def server_activate(self) -> None:
        self._connections: set[TrackedHandler] = set()
        self._connections_lock = threading.Lock()
        super().server_activate()

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
        self.stopping = True
        with self._connections_lock:
            idle = [h for h in self._connections if not h.busy]
        for handler in idle:
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it meanwhile
