"""The local API on TCP (``api_listen``): the same routes as the Unix socket, for token holders.

Each request is first rate-limited per client address (a token bucket: ``api_rate_burst``
requests at once, refilled at ``api_rate_limit`` per second; beyond it 429 with Retry-After),
then authenticated by ``Authorization: Bearer <token>`` (missing or unknown: 401), and the
token's role decides which routes it may call (403). It is plain HTTP: on another interface than
loopback, tokens travel in clear text, so put TLS (a reverse proxy, an SSH tunnel) in front.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import ThreadingHTTPServer

from ophiond.api.contract import Role
from ophiond.api.server import ApiHandler, ApiServerBase, Route
from ophiond.api.tokens import TokenStore
from ophiond.config import ListenAddress, is_loopback
from ophiond.serving import ClientLimits, ServerThread, bind_tcp

log = logging.getLogger(__name__)

# Client addresses whose buckets are remembered; past it, full buckets (idle clients) are
# forgotten, which changes nothing for them: a new bucket starts full too.
_MAX_TRACKED_CLIENTS = 10_000
_TOKEN_HINT = (
    "set OPHION_TOKEN (or --token) to an API token; "
    "an admin creates one with: ophion token create NAME --role read"
)


class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, refilled at ``rate``/s."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, address: str) -> float:
        """Spend one request of ``address``: 0 when allowed, else seconds until one would be."""
        now = self._clock()
        with self._lock:
            # Popped and re-inserted: the dict stays ordered from least to most recently seen.
            tokens, when = self._buckets.pop(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            allowed = tokens >= 1
            self._buckets[address] = (tokens - 1 if allowed else tokens, now)
            if len(self._buckets) > _MAX_TRACKED_CLIENTS:
                self._forget_least_recent()
        return 0.0 if allowed else (1 - tokens) / self.rate

    def _forget_least_recent(self) -> None:
        """Bound the memory: drop the half of the clients seen longest ago (their buckets have
        mostly refilled). Amortised, it is O(1) a request whatever the number of addresses."""
        for address in list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[address]


class _TcpHandler(ApiHandler):
    server: _TcpServer

    def caller(self) -> tuple[Role, str] | None:
        # The body of a POST (at most 1 MiB) has been read by now: answering before reading it
        # would leave it unread, and closing such a connection resets it under the client.
        address = str(self.client_address[0])
        wait = self.server.limiter.take(address)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            self.reply(
                HTTPStatus.TOO_MANY_REQUESTS,
                {
                    "error": f"too many requests from {address}: the API allows "
                    f"{self.server.limiter.rate:g} per second (bursts of "
                    f"{self.server.limiter.burst:g})",
                    "hint": f"retry after {retry_after} s",
                },
                {"Retry-After": str(retry_after)},
            )
            return None
        scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self._unauthorized("no bearer token: the TCP API needs 'Authorization: Bearer TOKEN'")
            return None
        record = self.server.tokens.record_of(token)
        if record is None:
            self._unauthorized("unknown or revoked token", invalid=True)
            return None
        return record.role, f"token:{record.name}"

    def _unauthorized(self, error: str, invalid: bool = False) -> None:
        challenge = 'Bearer realm="ophion"' + (', error="invalid_token"' if invalid else "")
        self.reply(
            HTTPStatus.UNAUTHORIZED,
            {"error": error, "hint": _TOKEN_HINT},
            {"WWW-Authenticate": challenge},
        )


class _TcpServer(ApiServerBase, ThreadingHTTPServer):
    daemon_threads = False  # stop() waits for queries in flight (bounded by sql_timeout)
    block_on_close = True
    tokens: TokenStore
    limiter: RateLimiter


class _TcpServer6(_TcpServer):
    address_family = socket.AF_INET6


class TcpApiServer(ServerThread):
    """Serves ``routes`` on TCP to bearer-token holders; :attr:`address` is the bound address."""

    def __init__(
        self,
        listen: ListenAddress,
        routes: list[Route],
        tokens: TokenStore,
        rate: float,
        burst: int,
        limits: ClientLimits,
    ) -> None:
        server = bind_tcp(_TcpServer, _TcpServer6, listen, _TcpHandler, "the API", "--api-listen")
        server.routes = routes
        server.tokens = tokens
        server.limiter = RateLimiter(rate, burst)
        super().__init__(server, "ophion-api-tcp", "the TCP API", limits)
        self.address = ListenAddress(listen.host, server.server_address[1])

    def start(self) -> None:
        super().start()
        log.info("API listening on %s (bearer tokens)", self.address)
        if not is_loopback(self.address.host):
            log.warning(
                "the API on %s is reachable from other hosts over plain HTTP: tokens travel in "
                "clear text unless TLS is put in front",
                self.address,
            )
