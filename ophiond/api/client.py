"""Client of the daemon's local API: one method per endpoint of :mod:`ophiond.api.contract`,
used by the CLI, the TUI, ``ophion instrument`` and the copilot.

It reaches the daemon through its Unix socket, whose 0600 mode is the access control, or over
TCP (``--api http://HOST:PORT``, the daemon's ``api_listen``) with a bearer token.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from ophiond.api import contract
from ophiond.api.contract import (
    AuditPage,
    AuditQuery,
    Endpoint,
    FirstSeen,
    FirstSeenQuery,
    LogQuery,
    LogsPage,
    MetricQuery,
    MetricSeries,
    MetricsPage,
    ServiceMapDoc,
    ServicesPage,
    ServicesQuery,
    SqlRequest,
    SqlResult,
    StatusDoc,
    TokenCreated,
    TokenList,
    TraceDoc,
    TraceQuery,
    TracesPage,
)
from ophiond.config import SYSTEM_HOME, is_loopback
from ophiond.errors import REMOTE, ApiError, DaemonNotRunning, InvalidParameter, OphionError

_START_HINT = "start it with: ophion daemon start   (or: systemctl start ophiond)"
# The conventional port of the TCP API, used when --api http://HOST names none.
DEFAULT_TCP_PORT = 8080
_TOKEN_HINT = "an admin creates one with: ophion token create NAME --role read"


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


@dataclass(frozen=True)
class TcpEndpoint:
    """A daemon's TCP API: host, port and the path it is served under (behind a proxy)."""

    host: str
    port: int
    prefix: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.prefix}"


def parse_api_url(text: str) -> TcpEndpoint:
    """``http://HOST[:PORT][/PREFIX]`` as a :class:`TcpEndpoint` (port 8080 when none is given)."""
    url = urlsplit(text)
    if url.scheme == "https":
        raise OphionError(
            f"cannot use API address {text!r}: ophiond serves plain HTTP",
            hint="use http:// on loopback, or reach a remote daemon through a tunnel: "
            "ssh -L 8080:127.0.0.1:8080 HOST, then --api http://127.0.0.1:8080",
        )
    try:
        port = url.port
    except ValueError:
        port = -1
    if url.scheme != "http" or not url.hostname or port == -1 or url.query or url.fragment:
        raise OphionError(
            f"cannot use API address {text!r}",
            hint="use http://HOST:PORT for the TCP API, or a socket path (PATH or unix:PATH)",
        )
    return TcpEndpoint(url.hostname, port or DEFAULT_TCP_PORT, url.path.rstrip("/"))


def _is_tcp(api: str) -> bool:
    return "://" in api and not api.startswith("unix:")


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
                f"{chosen!r} is a URL, not an API socket",
                hint="pass the socket path, e.g. --api unix:/var/lib/ophion/state/api.sock",
            )
        return Path(chosen)
    from ophiond.config import load_settings

    own = load_settings(env=env).validate().paths.api_socket
    system = SYSTEM_HOME / "state" / "api.sock"
    if not own.exists() and not env.get("OPHION_HOME") and system.exists():
        return system
    return own


def connect(
    api: str | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> ApiClient:
    """A client for ``api`` (else ``OPHION_API``): ``http://HOST:PORT`` is the TCP API, with
    ``token``, else ``OPHION_TOKEN``, else the admin token of this user's own daemon when it is
    the one listening there; anything else names a socket (see :func:`find_socket`)."""
    env = os.environ if env is None else env
    chosen = api or env.get("OPHION_API")
    if chosen and _is_tcp(chosen):
        endpoint = parse_api_url(chosen)
        token = token or env.get("OPHION_TOKEN") or _own_admin_token(endpoint, env)
        return ApiClient(timeout=timeout, endpoint=endpoint, token=token)
    return ApiClient(find_socket(api, env), timeout)


def _own_admin_token(endpoint: TcpEndpoint, env: Mapping[str, str]) -> str | None:
    """The admin token in our state directory, if ``endpoint`` is our own daemon's TCP API.

    Only then: the token must go neither to another host nor to another program that holds a
    loopback port, so the daemon's listen file must name that port.
    """
    from ophiond.config import load_settings

    paths = load_settings(env=env).validate().paths
    try:
        listen = json.loads(paths.listen_file.read_text())
        token = paths.admin_token_file.read_text().strip()
    except (OSError, ValueError):
        return None  # no daemon of ours runs, or its files are not ours to read: no token
    own = listen.get("api_tcp") if isinstance(listen, dict) else None
    if not isinstance(own, str) or not _alive(listen.get("pid")):
        return None  # a listen file left by a daemon that died: the port may be someone else's
    own_host, _, own_port = own.rpartition(":")
    own_host = own_host.strip("[]")
    same_host = own_host == endpoint.host or (
        is_loopback(endpoint.host) and (is_loopback(own_host) or own_host in ("0.0.0.0", "::"))
    )
    if not same_host or own_port != str(endpoint.port):
        return None
    return token or None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ApiClient:
    """Calls ``/api/v1/...`` on the daemon; raises :class:`DaemonNotRunning` or :class:`ApiError`.

    Give it a socket path, or a TCP ``endpoint`` and the ``token`` to send there.
    """

    def __init__(
        self,
        socket_path: Path | None = None,
        timeout: float = 60.0,
        *,
        endpoint: TcpEndpoint | None = None,
        token: str | None = None,
    ) -> None:
        if (socket_path is None) == (endpoint is None):
            raise ValueError("ApiClient needs a socket path or a TCP endpoint, not both")
        self.socket_path = socket_path
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout

    @property
    def address(self) -> str:
        """Where the daemon is reached: the socket path or ``http://HOST:PORT``."""
        return str(self.endpoint if self.endpoint is not None else self.socket_path)

    # -- the endpoints (ophiond.api.contract), one method each ---------------------------------

    def status(self) -> StatusDoc:
        """The daemon's status: version, listen addresses, counters, storage, jobs."""
        return cast("StatusDoc", self._call(contract.STATUS))

    def services(self, query: ServicesQuery) -> ServicesPage:
        """Each service's request rate, error rate and latency percentiles."""
        query.check()
        return cast("ServicesPage", self._call(contract.SERVICES, query.params()))

    def traces(self, query: TraceQuery) -> TracesPage:
        """Recent traces matching ``query``."""
        query.check()
        return cast("TracesPage", self._call(contract.TRACES, query.params()))

    def trace(self, trace_id: str) -> TraceDoc:
        """One trace, by its id or a unique start of it."""
        return cast("TraceDoc", self._call(contract.TRACE, path={"trace_id": trace_id}))

    def logs(self, query: LogQuery) -> LogsPage:
        """Log records matching ``query``, oldest first."""
        query.check()
        return cast("LogsPage", self._call(contract.LOGS, query.params()))

    def follow_logs(self, query: LogQuery, read_timeout: float = 15.0) -> ApiStream:
        """The records matching ``query`` and then each new one as it is stored, as an open
        stream (see :meth:`open_stream`)."""
        query.check()
        return self.open_stream(contract.LOG_STREAM, query.params(), read_timeout)

    def metrics(self, since: str) -> MetricsPage:
        """Every metric with points since ``since``."""
        contract.check_since(since)
        return cast("MetricsPage", self._call(contract.METRICS, {"since": since}))

    def metric(self, query: MetricQuery) -> MetricSeries:
        """One metric's series over time."""
        query.check()
        path = {"name": query.name}
        return cast("MetricSeries", self._call(contract.METRIC, query.params(), path=path))

    def service_map(self, since: str) -> ServiceMapDoc:
        """Which services call which since ``since``."""
        contract.check_since(since)
        return cast("ServiceMapDoc", self._call(contract.SERVICE_MAP, {"since": since}))

    def sql(self, request: SqlRequest) -> SqlResult:
        """Run a read-only SQL query over the documented views."""
        request.check()
        body = {"sql": request.sql, "max_rows": request.max_rows}
        return cast("SqlResult", self._call(contract.SQL, body=body))

    def first_seen(self, query: FirstSeenQuery) -> FirstSeen:
        """The first telemetry whose resource has an attribute, since a time."""
        query.check()
        return cast("FirstSeen", self._call(contract.FIRST_SEEN, query.params()))

    def tokens(self) -> TokenList:
        """The TCP API's tokens (never the tokens themselves)."""
        return cast("TokenList", self._call(contract.TOKENS))

    def create_token(self, name: str, role: str) -> TokenCreated:
        """A new token for the TCP API; the answer holds it, and nothing ever shows it again."""
        body = {"name": name, "role": role}
        return cast("TokenCreated", self._call(contract.TOKEN_CREATE, body=body))

    def revoke_token(self, name: str) -> None:
        """Revoke the token named ``name``."""
        self._call(contract.TOKEN_REVOKE, path={"name": name})

    def audit(self, query: AuditQuery) -> AuditPage:
        """The audit log, newest first."""
        query.check()
        return cast("AuditPage", self._call(contract.AUDIT, query.params()))

    # -- transport ------------------------------------------------------------------------------

    def open_stream(
        self,
        endpoint: Endpoint,
        params: Mapping[str, Any] | None = None,
        read_timeout: float = 15.0,
    ) -> ApiStream:
        """GET an NDJSON stream and return it open: iterating it yields each document, and its
        :meth:`ApiStream.close` may be called from another thread to end a blocked read.

        The answer's headers are awaited for up to the client's ``timeout`` (the daemon runs a
        backlog query first); after them, ``read_timeout`` seconds without a byte raise
        :class:`DaemonNotRunning`: the daemon sends a keep-alive every 5 s, so that silence
        means it is hung.
        """
        conn = self._connection(self.timeout)
        try:
            target = self._url(endpoint.url() + _query(params))
            conn.request(endpoint.method, target, headers=self._headers())
            # Kept now: once the answer says it closes the connection, http.client hands the
            # socket over to the response and forgets it.
            sock = conn.sock
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._unreachable(e) from None
        if response.status != 200:
            try:
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                raise self._unreachable(e) from None
            finally:
                conn.close()
            raise self._refused(response, data)
        assert sock is not None  # request() connected it
        sock.settimeout(read_timeout)
        return ApiStream(self, conn, sock, response, read_timeout)

    def _url(self, path: str) -> str:
        prefix = self.endpoint.prefix if self.endpoint is not None else ""
        return f"{prefix}{contract.PREFIX}{path}"

    def _headers(self, json_body: bool = False) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if json_body else {}
        if self.endpoint is not None and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.endpoint is not None:
            return http.client.HTTPConnection(
                self.endpoint.host, self.endpoint.port, timeout=timeout
            )
        return _UnixConnection(str(self.socket_path), timeout)

    def _unreachable(self, error: OSError | http.client.HTTPException) -> OphionError:
        if self.endpoint is not None:
            return self._tcp_unreachable(error)
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

    def _tcp_unreachable(self, error: OSError | http.client.HTTPException) -> OphionError:
        if isinstance(error, socket.gaierror):
            return OphionError(
                f"cannot find the host of {self.endpoint}: {error.strerror or error}",
                hint="check the address given with --api or OPHION_API",
            )
        if isinstance(error, ConnectionRefusedError):
            return DaemonNotRunning(
                f"ophiond is not running at {self.endpoint} (connection refused)",
                hint="check --api / OPHION_API, and that the daemon runs with api_listen "
                "(ophiond --api-listen HOST:PORT)",
            )
        return DaemonNotRunning(
            f"ophiond did not answer at {self.endpoint}: {error or type(error).__name__}",
            hint="check --api / OPHION_API, and that the daemon runs with api_listen",
        )

    def _refused(self, response: http.client.HTTPResponse, data: bytes) -> OphionError:
        """The error for a reply other than 200, from its status and its {"error","hint"} body."""
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            document = {}
        error = str(document.get("error") or f"HTTP {response.status}")
        hint = document.get("hint")
        if response.status == 401:
            problem = "refused the token (unknown or revoked)" if self.token else "needs a token"
            return ApiError(
                f"the API at {self.address} {problem}: set OPHION_TOKEN or pass --token",
                hint=_TOKEN_HINT,
            )
        if response.status == 403:
            return ApiError(
                f"not allowed: {error}",
                hint=hint or "use a token with a higher role: ophion token create NAME --role ROLE",
            )
        if response.status == 429:
            retry_after = response.getheader("Retry-After") or "1"
            return ApiError(
                f"rate limited by the API at {self.address}; retry after {retry_after} s",
                hint="the TCP API allows api_rate_limit requests per second per client address",
            )
        if not document:
            return ApiError(f"the daemon sent a reply that is not JSON ({response.status})")
        try:
            status = HTTPStatus(response.status)
        except ValueError:
            return ApiError(error, hint=hint if isinstance(hint, str) else None)
        return remote_error(document, status)

    def _call(
        self,
        endpoint: Endpoint,
        params: Mapping[str, Any] | None = None,
        *,
        path: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        conn = self._connection(self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = self._headers(json_body=payload is not None)
            target = self._url(endpoint.url(**(path or {})) + _query(params))
            conn.request(endpoint.method, target, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        finally:
            conn.close()
        if response.status != 200:
            raise self._refused(response, data)
        try:
            document = json.loads(data)
        except ValueError:
            raise ApiError("the daemon sent a reply that is not JSON") from None
        if not isinstance(document, dict):
            raise ApiError("the daemon sent an unexpected reply")
        return document


class ApiStream:
    """An open NDJSON answer of the daemon: iterate it for its documents (keep-alive lines are
    skipped), and :meth:`close` it, from any thread, to end it.

    Iteration ends when the daemon ends the stream (it is stopping) or after :meth:`close`;
    an ``{"error", "hint"}`` line raises :class:`ApiError`, a broken connection or
    ``read_timeout`` seconds of silence :class:`DaemonNotRunning`.
    """

    def __init__(
        self,
        client: ApiClient,
        conn: http.client.HTTPConnection,
        sock: socket.socket,
        response: http.client.HTTPResponse,
        read_timeout: float,
    ) -> None:
        self._client = client
        self._conn = conn
        self._sock = sock
        self._response = response
        self.read_timeout = read_timeout
        # Reentrant: Ctrl-C raises KeyboardInterrupt wherever the reading thread is, also just
        # after a `with self._lock:` acquired the lock and before its block began, which leaves
        # the lock held; the close() that follows in the same thread must not wait for it.
        self._lock = threading.RLock()
        self._closed = False  # close() was called, or the stream ended: no more reads
        self._reading = False  # a thread is inside readline()
        self._released = False  # the connection's file descriptors are closed

    def __iter__(self) -> ApiStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            line = self._readline()
            if not line:
                self.close()
                raise StopIteration  # the daemon ended the stream, or close() was called
            if line.strip():  # an empty line is a keep-alive
                document: dict[str, Any] = json.loads(line)
                if "error" in document:
                    self.close()
                    raise remote_error(document, HTTPStatus.BAD_REQUEST)
                return document

    def _readline(self) -> bytes:
        """The next line; ``b""`` at the end of the stream or once closed."""
        with self._lock:
            if self._closed:
                return b""
            self._reading = True
        try:
            return self._response.readline()
        except TimeoutError:
            if self._was_closed():
                return b""
            self.close()
            raise DaemonNotRunning(
                f"ophiond sent nothing for {self.read_timeout:g} s on {self._client.address}, "
                "though it sends a keep-alive every 5 s: it seems hung",
                hint="check it with: ophion status; its log says what it is doing",
            ) from None
        except (OSError, http.client.HTTPException) as e:
            if self._was_closed():
                return b""  # close() shut the socket under the read: not a failure
            self.close()
            raise self._client._unreachable(e) from None
        finally:
            with self._lock:
                self._reading = False
                release = self._closed
            if release:
                self._release()

    def _was_closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self) -> None:
        """End the stream; safe from any thread, and a read blocked in another thread returns
        at once (iteration then ends without an error)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reading = self._reading
        # shutdown() wakes a thread blocked in recv() on this socket, where close() would not
        # (and would free the descriptor under it); that thread releases the connection.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the daemon closed the connection already: nothing left to shut
        if not reading:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._response.close()
        self._conn.close()
        self._sock.close()

    def __enter__(self) -> ApiStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def remote_error(document: Mapping[str, Any], status: HTTPStatus) -> OphionError:
    """The error the daemon answered with, as the class it raised when the API names one we
    know (``kind``), else :class:`ApiError`; with its message and hint."""
    error = str(document.get("error") or f"HTTP {status.value}")
    hint = document.get("hint")
    hint = hint if isinstance(hint, str) else None
    param = document.get("param")
    if status == HTTPStatus.BAD_REQUEST and isinstance(param, str):
        return InvalidParameter(param, error, hint)
    kind = REMOTE.get(str(document.get("kind")))
    if kind is None:
        return ApiError(error, hint=hint)
    same = kind(error, hint)
    same.http_status = status
    return same


def _query(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    pairs = [(k, v) for k, v in params.items() if v is not None and v != []]
    return "?" + urlencode(pairs, doseq=True) if pairs else ""
