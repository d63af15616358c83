"""The local API's contract, in one place: every endpoint, what it takes and what it answers.

The server's routes (:mod:`ophiond.api.routes`) and the client (:mod:`ophiond.api.client`) both
use these definitions, so a path or a parameter is spelled once and the CLI, the TUI,
``ophion instrument`` and the copilot call methods, never paths.

A request type holds the values as a person typed them (``since="15m"``). Its :meth:`check`
validates them and returns what the store is asked (``since`` as a time): the server calls it
on every request, and the client calls the same method before sending, so a usage error is
found without a daemon, and the rule for it is written once. A bad value raises
:class:`~ophiond.errors.InvalidParameter` naming the parameter, which the CLI shows as a usage
error of its option of the same name.

The response types are ``TypedDict`` types of the JSON documents, as the store's queries build
them; docs/api.md describes the fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict
from urllib.parse import quote

from ophiond.errors import InvalidParameter, TimeSpecError

if TYPE_CHECKING:
    from ophiond.store.queries import LogSearch, TraceSearch

PREFIX = "/api/v1"


class Role(IntEnum):
    """What a caller may do; each role includes the ones below it."""

    READ = 1
    OPERATE = 2
    ADMIN = 3


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: method, path under ``/api/v1`` (``{name}`` marks a path parameter), the
    role it needs, and whether it answers an NDJSON stream."""

    method: str
    path: str
    role: Role
    stream: bool = False

    def url(self, **path_params: str) -> str:
        """The path under ``/api/v1`` with its parameters filled in, each quoted whole."""
        return self.path.format(**{k: quote(v, safe="") for k, v in path_params.items()})


STATUS = Endpoint("GET", "/status", Role.READ)
SQL = Endpoint("POST", "/sql", Role.READ)
SERVICES = Endpoint("GET", "/services", Role.READ)
TRACES = Endpoint("GET", "/traces", Role.READ)
TRACE = Endpoint("GET", "/traces/{trace_id}", Role.READ)
LOGS = Endpoint("GET", "/logs", Role.READ)
LOG_STREAM = Endpoint("GET", "/logs/stream", Role.READ, stream=True)
METRICS = Endpoint("GET", "/metrics", Role.READ)
METRIC = Endpoint("GET", "/metrics/{name}", Role.READ)
SERVICE_MAP = Endpoint("GET", "/map", Role.READ)
FIRST_SEEN = Endpoint("GET", "/first-seen", Role.READ)
TOKENS = Endpoint("GET", "/tokens", Role.ADMIN)
TOKEN_CREATE = Endpoint("POST", "/tokens", Role.ADMIN)
TOKEN_REVOKE = Endpoint("DELETE", "/tokens/{name}", Role.ADMIN)
AUDIT = Endpoint("GET", "/audit", Role.ADMIN)


# ---------------------------------------------------------------------------------------------
# Checking what a person typed (shared by client and server)


def check_since(text: str, now: dt.datetime | None = None, param: str = "since") -> dt.datetime:
    """A window's start from ``15m`` or an ISO time."""
    from ophiond.timespec import parse_since

    try:
        return parse_since(text, now)
    except TimeSpecError as e:
        raise InvalidParameter(param, e.message, e.hint) from None


def check_duration(text: str | None, param: str) -> int | None:
    """Nanoseconds from ``250ms``; ``None`` for none given."""
    if text is None:
        return None
    from ophiond.timespec import parse_duration_ns

    try:
        return parse_duration_ns(text)
    except TimeSpecError as e:
        raise InvalidParameter(param, f"{param}: {e.message}", e.hint) from None


def check_choice(text: str | None, param: str, choices: Mapping[str, str]) -> str | None:
    """``text`` when it is one of ``choices`` (name -> what it means), else an error listing
    them; ``None`` for none given."""
    if text is None or text in choices:
        return text
    names = list(choices)
    _refuse(
        param,
        f"{param} must be {', '.join(names[:-1])} or {names[-1]}, not {text!r}",
        "; ".join(f"{name}: {meaning}" for name, meaning in choices.items()),
    )


def check_int(value: int | str | None, param: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        _refuse(param, f"{param} must be a whole number, not {value!r}")
    if not low <= number <= high:
        _refuse(param, f"{param} must be between {low} and {high}, not {number}")
    return number


def check_pairs(items: tuple[str, ...], param: str, what: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` items as pairs."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _refuse(param, f"{what} {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _refuse(param: str, message: str, hint: str | None = None) -> NoReturn:
    raise InvalidParameter(param, message, hint)


# ---------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class ServicesQuery:
    since: str = "1h"
    step: str | None = None  # a time series of each service's rates, per step

    def check(self, now: dt.datetime | None = None) -> tuple[dt.datetime, int | None]:
        return check_since(self.since, now), check_duration(self.step, "step")

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "step": self.step}


_TRACE_STATUS = {"ok": "no span has an error", "error": "a span has an error"}
_TRACE_SORT = {
    "start": "the newest traces first",
    "duration": "the slowest first",
}


@dataclass(frozen=True)
class TraceQuery:
    since: str = "1h"
    service: str | None = None
    name: str | None = None
    min_duration: str | None = None
    max_duration: str | None = None
    status: str | None = None
    attr: tuple[str, ...] = ()  # KEY=VALUE of a span or resource attribute
    limit: int | str = 20  # (text as the server receives it)
    sort: str = "start"

    def check(self) -> TraceSearch:
        from ophiond.store.queries import TraceSearch

        return TraceSearch(
            since=check_since(self.since),
            service=self.service,
            name=self.name,
            min_duration_ns=check_duration(self.min_duration, "min_duration"),
            max_duration_ns=check_duration(self.max_duration, "max_duration"),
            status=check_choice(self.status, "status", _TRACE_STATUS),
            attributes=check_pairs(self.attr, "attr", "attribute filter"),
            limit=check_int(self.limit, "limit", 20, 1, 10_000),
            sort=check_choice(self.sort, "sort", _TRACE_SORT) or "start",
        )

    def params(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "name": self.name,
            "min_duration": self.min_duration,
            "max_duration": self.max_duration,
            "status": self.status,
            "attr": list(self.attr),
            "since": self.since,
            "limit": self.limit,
            "sort": None if self.sort == "start" else self.sort,
        }


@dataclass(frozen=True)
class LogQuery:
    since: str = "1h"
    service: str | None = None
    severity: str | None = None  # this level and above
    grep: str | None = None
    trace: str | None = None  # a trace id or its start
    limit: int | str = 100

    def check(self) -> LogSearch:
        from ophiond.errors import OphionError
        from ophiond.store.queries import LogSearch, severity_floor

        floor = None
        if self.severity is not None:
            try:
                floor = severity_floor(self.severity)
            except OphionError as e:
                raise InvalidParameter("severity", e.message, e.hint) from None
        return LogSearch(
            since=check_since(self.since),
            service=self.service,
            min_severity=floor,
            grep=self.grep,
            trace_id=self.trace,
            limit=check_int(self.limit, "limit", 100, 1, 100_000),
        )

    def params(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "severity": self.severity,
            "grep": self.grep,
            "trace": self.trace,
            "since": self.since,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class MetricQuery:
    name: str
    since: str = "1h"
    service: str | None = None
    step: str | None = None

    def check(self, now: dt.datetime | None = None) -> tuple[dt.datetime, int | None]:
        return check_since(self.since, now), check_duration(self.step, "step")

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "service": self.service, "step": self.step}


@dataclass(frozen=True)
class SqlRequest:
    sql: str
    max_rows: int = 10_000

    def check(self) -> None:
        """Raises :class:`QueryError` (what ``ophion sql`` always answered these with)."""
        from ophiond.errors import QueryError

        if not isinstance(self.sql, str) or not self.sql.strip():
            raise QueryError("no SQL given")
        if not isinstance(self.max_rows, int) or isinstance(self.max_rows, bool):
            raise QueryError("max_rows must be a positive whole number")
        if self.max_rows < 1:
            raise QueryError("max_rows must be a positive whole number")


@dataclass(frozen=True)
class FirstSeenQuery:
    """The first telemetry since ``since`` whose resource has the attribute ``KEY=VALUE``
    (what ``ophion instrument`` waits for)."""

    resource_attribute: str
    since: str

    def check(self) -> tuple[str, str, dt.datetime]:
        [(key, value)] = check_pairs((self.resource_attribute,), "resource_attribute", "attribute")
        return key, value, check_since(self.since)

    def params(self) -> dict[str, Any]:
        return {"resource_attribute": self.resource_attribute, "since": self.since}


@dataclass(frozen=True)
class AuditQuery:
    since: str = "7d"
    action: str | None = None  # one action, or a prefix ending in "." (token.)
    limit: int | str = 100

    def check(self) -> tuple[dt.datetime, str | None, int]:
        return check_since(self.since), self.action, check_int(self.limit, "limit", 100, 1, 10_000)

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "action": self.action, "limit": self.limit}


# ---------------------------------------------------------------------------------------------
# Responses (the JSON documents; nested parts typed where callers read them)


class StatusDoc(TypedDict):
    """``GET /status``: what ``ophion status --json`` prints (docs/daemon.md says each part)."""

    version: str
    pid: int
    started_at: str
    uptime_s: float
    listen: dict[str, str | None]  # grpc, http, api, api_tcp
    signals: dict[str, dict[str, int]]  # per signal: requests, received, ..., stored, waiting
    queue: dict[str, int]  # depth, capacity
    jobs: list[dict[str, Any]]  # the scheduler's jobs, with their last and next run
    state: dict[str, Any]  # path, bytes, schema
    storage: dict[str, Any]  # data_dir, bytes, partitions, retention, what failed or was lost


class ServiceRow(TypedDict, total=False):
    service: str
    requests: int
    request_rate: float
    errors: int
    error_rate: float
    p50_ns: int | None
    p95_ns: int | None
    p99_ns: int | None
    spans: int
    measured_by: str
    last_seen: str
    rate_points: list[dict[str, Any]]  # with a step


class ServicesPage(TypedDict, total=False):
    since: str
    step_ns: int
    services: list[ServiceRow]


class TraceSummary(TypedDict):
    trace_id: str
    root_service: str | None
    root_name: str | None
    start: str
    duration_ns: int
    spans: int
    error: bool
    services: list[str]


class TracesPage(TypedDict):
    since: str
    traces: list[TraceSummary]


class TraceDoc(TypedDict):
    trace_id: str
    start: str
    start_ns: int
    duration_ns: int
    services: list[str]
    error: bool
    critical_path: list[str]
    spans: list[dict[str, Any]]


class LogRecord(TypedDict):
    time: str
    time_ns: int
    service: str | None
    severity_number: int | None
    severity: str | None
    body: str | None
    body_type: str | None
    trace_id: str | None
    span_id: str | None
    attributes: dict[str, Any]


class LogsPage(TypedDict):
    logs: list[LogRecord]


class MetricsPage(TypedDict):
    since: str
    metrics: list[dict[str, Any]]


class MetricSeries(TypedDict):
    name: str
    type: str
    unit: str | None
    step_ns: int
    since: str
    series: list[dict[str, Any]]


class ServiceMapDoc(TypedDict, total=False):
    since: str
    services: list[str]
    edges: list[dict[str, Any]]


class SqlResult(TypedDict):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool


class FirstSeen(TypedDict):
    """``found`` is False until telemetry arrived; then what it was."""

    found: bool
    signal: str | None  # span, metric or log
    service: str | None
    what: str | None  # the span's name, the metric's name, or the log record's body
    at: str | None


class TokenInfo(TypedDict):
    name: str
    role: str
    created_at: str


class TokenCreated(TokenInfo):
    token: str  # shown in this answer and never again


class TokenList(TypedDict):
    tokens: list[TokenInfo]


class AuditPage(TypedDict):
    since: str
    entries: list[dict[str, Any]]
