"""Settings: defaults < config.toml < ``OPHION_*`` environment < command-line flags.

Every field of :class:`Settings` has a docstring; ``docs/configuration.md`` is written from them
and a test keeps the two in step. Paths come from platformdirs, all moved under ``OPHION_HOME``
when it is set.

Besides its flat keys, config.toml may hold tables (``[alerting]``), each read into a *section*:
a dataclass documented the same way, listed in :func:`config_sections`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar, cast

from ophiond.errors import ConfigError
from ophiond.model import IngestLimits

if TYPE_CHECKING:
    from ophiond.serving import ClientLimits

APP_NAME = "ophion"
# The TCP API's address when it is just turned on (the original OPHION platform's API port).
DEFAULT_API_LISTEN = "127.0.0.1:8080"
# Where a system service (share/systemd/ophiond.service) keeps its state; the CLI looks here last.
SYSTEM_HOME = Path("/var/lib/ophion")


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True)
class Paths:
    """Where ophion keeps its configuration, data and runtime state."""

    config_file: Path
    data_dir: Path
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "ophiond.pid"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "ophiond.lock"

    @property
    def api_socket(self) -> Path:
        return self.state_dir / "api.sock"

    @property
    def listen_file(self) -> Path:
        """The addresses the running daemon actually listens on (ports of 0 resolved)."""
        return self.state_dir / "listen.json"

    @property
    def tokens_file(self) -> Path:
        """Hashes, names and roles of the TCP API's bearer tokens (mode 0600)."""
        return self.state_dir / "tokens.json"

    @property
    def admin_token_file(self) -> Path:
        """The admin token written on first start (mode 0600)."""
        return self.state_dir / "admin.token"

    @property
    def log_file(self) -> Path:
        """stderr of a daemon started in the background by ``ophion daemon start``."""
        return self.state_dir / "ophiond.log"

    @property
    def rules_dir(self) -> Path:
        """Rule files, beside the config file in use; the alerting engine reads them."""
        return self.config_file.parent / "rules"

    @property
    def playbooks_dir(self) -> Path:
        """Playbook files, beside the config file in use; the healing engine reads them."""
        return self.config_file.parent / "playbooks"


def default_paths(env: Mapping[str, str] | None = None) -> Paths:
    """Paths from ``OPHION_HOME`` when set, else the platform's per-user directories."""
    env = os.environ if env is None else env
    home = env.get("OPHION_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(root / "config.toml", root / "data", root / "state")
    import platformdirs  # imported here: only needed when OPHION_HOME is not set

    return Paths(
        Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml",
        Path(platformdirs.user_data_dir(APP_NAME)),
        Path(platformdirs.user_state_dir(APP_NAME)),
    )


# ---------------------------------------------------------------------------------------------
# Value parsers shared by the config file, the environment and the flags

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from ``250ms``, ``1.5s``, ``2m``, ``12h``, ``7d``, ``1w`` (a bare number is seconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{what} must not be negative: {text}")
        return float(text)
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ConfigError(
            f"{what}: {text!r} is not a duration",
            hint="use a number and a unit: 250ms, 1.5s, 2m, 12h, 7d, 1w",
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``512MB``, ``20MiB``, ``10GB`` or a bare number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{what} must not be negative: {text}")
        return text
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS and unit != "":
        raise ConfigError(
            f"{what}: {text!r} is not a size", hint="use a number and a unit: 512MB, 20MiB, 10GB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS.get(unit, 1))


@dataclass(frozen=True)
class ListenAddress:
    """A host and port to listen on; ``None`` from :func:`parse_listen` means the listener is off."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def parse_listen(text: str, what: str = "listen address") -> ListenAddress | None:
    """``HOST:PORT``, ``[::1]:PORT`` or ``off``. A port of 0 lets the system pick a free one."""
    text = text.strip()
    if text.lower() in ("off", "none", "disabled", ""):
        return None
    match = re.match(r"^\[([^\]]+)\]:(\d+)$", text) or re.match(r"^([^:\[\]]+):(\d+)$", text)
    if not match:
        raise ConfigError(
            f"{what}: {text!r} is not HOST:PORT",
            hint="for example 127.0.0.1:4317, [::1]:4317, 0.0.0.0:4317 or off",
        )
    port = int(match.group(2))
    if port > 65535:
        raise ConfigError(f"{what}: port {port} is out of range (0-65535)")
    return ListenAddress(match.group(1), port)


# ---------------------------------------------------------------------------------------------
# Sections: the tables of config.toml

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)
T = TypeVar("T")


class Section(Protocol[V_co]):
    """A table of config.toml: a dataclass with a docstring under every field, like
    :class:`Settings`, and a ``validate`` that parses it into what its engine uses.

    Fields are ``str``, ``int``, ``float`` or ``bool`` (durations and sizes are strings that
    ``validate`` parses, naming the key as ``table.key``), another such dataclass (a sub-table,
    ``[table.sub]``) or a list of them (an array of tables, ``[[table.items]]``). Every field of
    a section and of its sub-tables has a default, since the table may be absent; a dataclass
    in a list may have required fields.
    """

    def validate(self) -> V_co: ...


def config_sections() -> dict[str, type[Section[Any]]]:
    """The tables config.toml may hold, by name: an engine with settings adds its line here.

    Its section class lives in a light module of its own (dataclasses and the parsers of this
    one), imported in this function so that it may import from this module and so that
    importing ``ophiond.config`` stays cheap. No engine has settings yet.
    """
    return {}


def _default_sections() -> dict[type[Any], Any]:
    return {cls: cls() for cls in config_sections().values()}


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    """Everything ophiond can be told. Field docstrings are the configuration reference."""

    grpc_listen: str = "127.0.0.1:4317"
    """OTLP/gRPC receiver address, ``HOST:PORT`` (port 0 picks a free one) or ``off``."""

    http_listen: str = "127.0.0.1:4318"
    """OTLP/HTTP receiver address, ``HOST:PORT`` (port 0 picks a free one) or ``off``."""

    data_dir: str = ""
    """Directory of the DuckDB partition files. Default: ``$OPHION_HOME/data`` or the user data dir."""

    state_dir: str = ""
    """Directory of the pid file, API socket and listen file. Default: ``$OPHION_HOME/state``."""

    retention_max_age: str = "7d"
    """Delete stored data once it is older than this (by arrival time), e.g. ``12h``, ``7d``, ``4w``."""

    retention_max_disk: str = "5GB"
    """Disk budget of the store; the oldest data is deleted first when it is exceeded."""

    ingest_key: str = ""
    """When set, receivers require ``Authorization: Bearer <key>`` (HTTP header or gRPC metadata)."""

    queue_size: int = 150_000
    """Records (spans, log records, metric points) accepted and not yet in DuckDB before receivers
    refuse new requests with a retryable error (HTTP 503 / gRPC UNAVAILABLE)."""

    max_request_size: str = "20MiB"
    """Largest accepted request body, after decompression (HTTP 413 / gRPC RESOURCE_EXHAUSTED)."""

    max_attribute_value_size: str = "64KiB"
    """Largest string or bytes attribute value stored (of any record, resource or scope, also
    inside arrays and kvlists), and largest name, message or other string field; a longer one is
    cut to this size, ending with ``…[truncated N bytes]``, and the client is told in
    ``partial_success``."""

    max_attributes_size: str = "1MiB"
    """Largest attributes of one record as stored JSON; attributes that do not fit are dropped,
    counted in the record's ``dropped_attributes_count`` and reported in ``partial_success``."""

    max_log_body_size: str = "256KiB"
    """Largest log body stored; a longer one is cut to this size, ending with
    ``…[truncated N bytes]`` (a structured body as its JSON text), and reported."""

    max_span_events: int = 128
    """Events stored per span (the OpenTelemetry SDKs' default limit); the later ones are dropped,
    counted in the span's ``dropped_events_count`` and reported in ``partial_success``."""

    max_span_links: int = 128
    """Links stored per span (the SDKs' default limit); the later ones are dropped, counted in
    the span's ``dropped_links_count`` and reported in ``partial_success``."""

    memory_limit: str = "64MB"
    """Memory DuckDB may use for its buffers and queries. DuckDB keeps data it wrote cached up to
    this much, so it is most of the daemon's memory; raise it for large ad-hoc SQL queries."""

    decode_workers: str = "auto"
    """Processes that decode OTLP requests: ``auto`` (one per CPU the daemon may use, at most 8),
    a number, or ``0`` to decode in the receiving threads of the daemon's own process."""

    sql_timeout: str = "30s"
    """Longest an ``ophion sql`` query may run before it is interrupted."""

    sql_max_memory: str = "auto"
    """Memory that queries may hold, all together, of ``memory_limit``; the rest is kept for the
    writer. A query's sorts and hash tables spill to disk past it (DuckDB's
    ``operator_memory_limit``), and a query that holds more anyway is stopped. ``auto`` is half
    of ``memory_limit``; see docs/sql.md."""

    sql_max_spill: str = "1GB"
    """Temporary disk (``<data_dir>/.tmp``) that queries may spill to, all together, when they
    need more than ``memory_limit``; a query that needs more is stopped with an error. ``0``
    keeps queries in memory."""

    sql_max_concurrent: int = 2
    """``ophion sql`` queries that may run at once; another one waits for a free slot, and the
    wait counts against its ``sql_timeout``."""

    housekeeping_interval: str = "60s"
    """How often retention and partition roll-over are checked when nothing is written (they
    are also checked after every flush into DuckDB, so the disk budget never waits for it)."""

    log_level: str = "info"
    """Daemon log level: ``debug``, ``info``, ``warning`` or ``error``."""

    api_listen: str = "off"
    """TCP address of the local API: ``HOST:PORT``, ``on`` for its default ``127.0.0.1:8080``, or
    ``off`` (the Unix socket only). Callers need a bearer token; port 0 picks a free one."""

    api_rate_limit: float = 20.0
    """Requests per second each client address may make to the TCP API (a token bucket)."""

    api_rate_burst: int = 40
    """Requests a client address may make at once, above ``api_rate_limit``, before it gets 429."""

    client_header_timeout: str = "10s"
    """Time an HTTP client (OTLP/HTTP receiver, API) has to send a request's first line and
    headers, from the connection's opening (on a kept-alive connection, from the request's
    first byte); a slower one is answered 408 and disconnected."""

    client_body_timeout: str = "20s"
    """Time an HTTP client has to send a request body, plus one second for every
    ``client_body_min_rate`` bytes it has sent (Apache's ``RequestReadTimeout body=20,MinRate=500``);
    a slower one is answered 408 and disconnected. However fast it keeps coming, a body must
    arrive within six times this (Apache's maximum, ``body=20-120``). No read waits more than
    30 s either way."""

    client_body_min_rate: int = 500
    """Bytes of a request body that earn its client one more second past
    ``client_body_timeout``: the slowest average rate, in bytes per second, at which a body may
    keep arriving."""

    max_connections_per_address: int = 32
    """Connections one client address may have open to each HTTP server (OTLP/HTTP receiver, TCP
    API); for another, the one of them that has waited longest for a request is closed, or the
    new one is refused when all are busy. Each server serves at most 256 connections in all."""

    # Resolved values, filled by :meth:`validate`; not settings themselves.
    paths: Paths = field(default_factory=lambda: default_paths(), repr=False)
    # The tables, by section class (see config_sections); read with :meth:`section`.
    sections: dict[type[Any], Any] = field(default_factory=_default_sections, repr=False)

    def section(self, cls: type[T]) -> T:
        """The table read into the section class ``cls``, as written (not yet validated)."""
        return cast(T, _section_of(self.sections, cls))

    def validate(self) -> ValidSettings:
        """Parse and check every field; raise :class:`ConfigError` naming the first bad one."""
        data_dir = Path(self.data_dir).expanduser() if self.data_dir else self.paths.data_dir
        state_dir = Path(self.state_dir).expanduser() if self.state_dir else self.paths.state_dir
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, not {self.queue_size}")
        level = self.log_level.lower()
        if level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log_level: {self.log_level!r} is not a level",
                hint="use debug, info, warning or error",
            )
        max_age = parse_duration(self.retention_max_age, "retention_max_age")
        if max_age <= 0:
            raise ConfigError("retention_max_age must be positive")
        if not self.api_rate_limit > 0:
            raise ConfigError(f"api_rate_limit must be positive, not {self.api_rate_limit}")
        if self.api_rate_burst < 1:
            raise ConfigError(f"api_rate_burst must be at least 1, not {self.api_rate_burst}")
        if self.sql_max_concurrent < 1:
            raise ConfigError(
                f"sql_max_concurrent must be at least 1, not {self.sql_max_concurrent}"
            )
        memory_limit = parse_size(self.memory_limit, "memory_limit")
        return ValidSettings(
            grpc_listen=parse_listen(self.grpc_listen, "grpc_listen"),
            http_listen=parse_listen(self.http_listen, "http_listen"),
            paths=Paths(self.paths.config_file, data_dir.absolute(), state_dir.absolute()),
            retention_max_age=max_age,
            retention_max_disk=parse_size(self.retention_max_disk, "retention_max_disk"),
            ingest_key=self.ingest_key,
            queue_size=self.queue_size,
            max_request_size=parse_size(self.max_request_size, "max_request_size"),
            ingest_limits=self._ingest_limits(),
            memory_limit=memory_limit,
            decode_workers=_decode_workers(self.decode_workers),
            sql_timeout=parse_duration(self.sql_timeout, "sql_timeout"),
            sql_max_memory=_query_memory(self.sql_max_memory, memory_limit),
            sql_max_spill=parse_size(self.sql_max_spill, "sql_max_spill"),
            sql_max_concurrent=self.sql_max_concurrent,
            housekeeping_interval=max(
                0.05, parse_duration(self.housekeeping_interval, "housekeeping_interval")
            ),
            log_level=level,
            api_listen=parse_listen(
                DEFAULT_API_LISTEN if self.api_listen.strip().lower() == "on" else self.api_listen,
                "api_listen",
            ),
            api_rate_limit=float(self.api_rate_limit),
            api_rate_burst=self.api_rate_burst,
            client_limits=self._client_limits(),
            sections={cls: value.validate() for cls, value in self.sections.items()},
        )

    def _client_limits(self) -> ClientLimits:
        from ophiond.serving import MAX_CONNECTIONS, ClientLimits

        timeouts = {}
        for name in ("client_header_timeout", "client_body_timeout"):
            timeouts[name] = parse_duration(getattr(self, name), name)
            if timeouts[name] <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)!r}")
        if self.client_body_min_rate < 1:
            raise ConfigError(
                f"client_body_min_rate must be at least 1 byte per second, "
                f"not {self.client_body_min_rate}"
            )
        if not 1 <= self.max_connections_per_address <= MAX_CONNECTIONS:
            raise ConfigError(
                f"max_connections_per_address must be from 1 to {MAX_CONNECTIONS}, "
                f"not {self.max_connections_per_address}"
            )
        return ClientLimits(
            header_timeout=timeouts["client_header_timeout"],
            body_timeout=timeouts["client_body_timeout"],
            body_min_rate=self.client_body_min_rate,
            max_per_address=self.max_connections_per_address,
        )

    def _ingest_limits(self) -> IngestLimits:
        sizes = {}
        for name in ("max_attribute_value_size", "max_attributes_size", "max_log_body_size"):
            sizes[name] = parse_size(getattr(self, name), name)
            if sizes[name] < 1024:
                raise ConfigError(
                    f"{name} must be at least 1KiB, not {getattr(self, name)!r}",
                    hint="a smaller value would keep little beyond the truncation marker",
                )
        for name in ("max_span_events", "max_span_links"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, not {getattr(self, name)}")
        return IngestLimits(
            attribute_value_size=sizes["max_attribute_value_size"],
            attributes_size=sizes["max_attributes_size"],
            log_body_size=sizes["max_log_body_size"],
            events_per_span=self.max_span_events,
            links_per_span=self.max_span_links,
        )


@dataclass(frozen=True)
class ValidSettings:
    """Settings after parsing: typed values the daemon uses directly."""

    grpc_listen: ListenAddress | None
    http_listen: ListenAddress | None
    paths: Paths
    retention_max_age: float
    retention_max_disk: int
    ingest_key: str
    queue_size: int
    max_request_size: int
    ingest_limits: IngestLimits
    memory_limit: int
    decode_workers: int
    sql_timeout: float
    sql_max_memory: int
    sql_max_spill: int
    sql_max_concurrent: int
    housekeeping_interval: float
    log_level: str
    api_listen: ListenAddress | None
    api_rate_limit: float
    api_rate_burst: int
    client_limits: ClientLimits
    sections: Mapping[type[Any], Any] = field(default_factory=dict, repr=False)

    def section(self, cls: type[Section[V]]) -> V:
        """What the section class ``cls`` validated its table into."""
        return cast(V, _section_of(self.sections, cls))


def _section_of(sections: Mapping[type[Any], Any], cls: type[Any]) -> Any:
    try:
        return sections[cls]
    except KeyError:
        raise LookupError(
            f"{cls.__name__} is not a config section: list it in config_sections()"
        ) from None


def _query_memory(text: str, memory_limit: int) -> int:
    if text.strip().lower() == "auto":
        return memory_limit // 2
    amount = parse_size(text, "sql_max_memory")
    if not 1 << 20 <= amount <= memory_limit:
        raise ConfigError(
            f"sql_max_memory must be between 1MiB and memory_limit, not {text!r}",
            hint="use auto (half of memory_limit) or a size such as 256MB",
        )
    return amount


def default_workers() -> int:
    """One worker per CPU this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _decode_workers(text: str) -> int:
    value = text.strip().lower()
    if value == "auto":
        return default_workers()
    if not value.isdigit() or int(value) > 64:
        raise ConfigError(
            f"decode_workers: {text!r} is not a number of processes",
            hint="use auto, 0 (decode in the daemon's process) or a number up to 64",
        )
    return int(value)


SETTING_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Settings) if f.name not in ("paths", "sections")
)
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, SETTING_NAMES, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "see docs/configuration.md for the settings"
    return ConfigError(f"{where}: unknown setting {key!r}", hint=hint)


def _coerce(name: str, value: Any, where: str) -> Any:
    return _coerce_as(_FIELD_TYPES[name], name, value, where)


# TOML has true and false; an environment variable can only spell them.
_BOOLEANS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def _coerce_as(kind: str, name: str, value: Any, where: str) -> Any:
    """``value`` as a field of type ``kind`` (``str``, ``int``, ``float`` or ``bool``)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise ConfigError(f"{where}: {name} must be true or false, not {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be a whole number, not {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a whole number, not {value!r}") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be a number, not {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {name} must be a finite number, not {value!r}")
        return number
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be a string, not {value!r}")
    return str(value)


# ---------------------------------------------------------------------------------------------
# Reading tables into section dataclasses


@dataclass(frozen=True)
class _TableField:
    name: str
    kind: str  # str, int, float, bool; "table" (a sub-table) or "tables" (an array of tables)
    table: type[Any] | None  # the dataclass of a sub-table or of each item of an array
    required: bool


_SCALARS = {str: "str", int: "int", float: "float", bool: "bool"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")  # no "__": it separates env parts


_TABLE_FIELDS: dict[type[Any], dict[str, _TableField]] = {}


def _is_table_class(hint: object) -> TypeGuard[type[Any]]:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _table_fields(cls: type[Any]) -> dict[str, _TableField]:
    """The keys of a table read into the dataclass ``cls``; a TypeError for a class that
    cannot be one (a mistake in ophiond, found by the first test that loads it)."""
    if cls in _TABLE_FIELDS:
        return _TABLE_FIELDS[cls]
    if not _is_table_class(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass, so it cannot be a config table")
    hints = typing.get_type_hints(cls)
    fields: dict[str, _TableField] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if not _NAME_RE.match(f.name):
            raise TypeError(f"{cls.__name__}.{f.name}: a config key is lower_case, without '__'")
        hint = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        args = typing.get_args(hint)
        if hint in _SCALARS:
            fields[f.name] = _TableField(f.name, _SCALARS[hint], None, required)
        elif _is_table_class(hint):
            _table_fields(hint)
            fields[f.name] = _TableField(f.name, "table", hint, required)
        elif typing.get_origin(hint) is list and len(args) == 1 and _is_table_class(args[0]):
            _table_fields(args[0])
            fields[f.name] = _TableField(f.name, "tables", args[0], required)
        else:
            raise TypeError(
                f"{cls.__name__}.{f.name}: a config key is str, int, float, bool, a dataclass "
                f"or a list of dataclasses, not {hint}"
            )
    _TABLE_FIELDS[cls] = fields
    return fields


def read_table(cls: type[T], data: Mapping[str, Any], name: str, where: str) -> T:
    """The dataclass ``cls`` from a TOML table, as strict as the flat settings: an unknown key
    or a value of the wrong type is a :class:`ConfigError` naming ``name.key`` and ``where``.

    For the sections of config.toml, and for files of their own (rules, playbooks) that are
    one table at the top, such as a dataclass with a ``rules: list[Rule]`` field.
    """
    fields = _table_fields(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        spec = fields.get(key)
        if spec is None:
            raise _unknown_table_key(key, name, fields, where)
        values[key] = _read_value(spec, value, f"{name}.{key}", where)
    missing = [f.name for f in fields.values() if f.required and f.name not in values]
    if missing:
        raise ConfigError(f"{where}: {name} needs {', '.join(missing)}")
    return cls(**values)


def _read_value(spec: _TableField, value: Any, dotted: str, where: str) -> Any:
    if spec.kind == "table":
        assert spec.table is not None
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {dotted} must be a table ([{dotted}]), not {value!r}")
        return read_table(spec.table, value, dotted, where)
    if spec.kind == "tables":
        assert spec.table is not None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError(
                f"{where}: {dotted} must be an array of tables ([[{dotted}]]), not {value!r}"
            )
        return [
            read_table(spec.table, item, f"{dotted}[{i}]", where) for i, item in enumerate(value)
        ]
    return _coerce_as(spec.kind, dotted, value, where)


def _set_from_env(table: T, name: str, path: list[str], text: str, where: str) -> T:
    """``table`` with the key at ``path`` (below sub-tables) set from an environment variable."""
    key, rest = path[0], path[1:]
    fields = _table_fields(type(table))
    spec = fields.get(key)
    dotted = f"{name}.{key}"
    if spec is None:
        raise _unknown_table_key(key, name, fields, where)
    if spec.kind == "table" and rest:
        value = _set_from_env(getattr(table, key), dotted, rest, text, where)
    elif spec.kind == "table":
        raise ConfigError(
            f"{where}: {dotted} is a table", hint="set one of its keys, OPHION_<TABLE>__<KEY>"
        )
    elif spec.kind == "tables":
        raise ConfigError(f"{where}: {dotted} is an array of tables", hint="set it in config.toml")
    elif rest:
        raise ConfigError(f"{where}: {dotted} is not a table, it has no {rest[0]!r}")
    else:
        value = _coerce_as(spec.kind, dotted, text, where)
    return cast(T, dataclasses.replace(cast(Any, table), **{key: value}))


def _unknown_table_key(
    key: str, name: str, fields: Mapping[str, _TableField], where: str
) -> ConfigError:
    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = (
        f"did you mean '{name}.{close[0]}'?"
        if close
        else f"[{name}] has {', '.join(fields) or 'no keys'}"
    )
    return ConfigError(f"{where}: unknown setting '{name}.{key}'", hint=hint)


def _unknown_table(key: str, known: Mapping[str, type[Any]], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    tables = ", ".join(f"[{name}]" for name in known) or "none, this ophiond reads no tables"
    hint = (f"did you mean [{close[0]}]? " if close else "") + f"known tables: {tables}"
    return ConfigError(f"{where}: unknown table [{key}]", hint=hint)


def _check_sections(sections: Mapping[str, type[Any]]) -> None:
    for name, cls in sections.items():
        if not _NAME_RE.match(name) or name in SETTING_NAMES:
            raise TypeError(f"config section name {name!r}: lower_case, not a flat setting")
        if not callable(getattr(cls, "validate", None)):
            raise TypeError(f"config section {cls.__name__} has no validate()")
        _table_fields(cls)
    if len(set(sections.values())) < len(sections):
        raise TypeError("a config section class is listed under two names")


# ---------------------------------------------------------------------------------------------
# Loading


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    sections: Mapping[str, type[Section[Any]]] | None = None,
) -> Settings:
    """Build :class:`Settings` from the config file, then ``OPHION_*`` variables, then overrides.

    ``config_file`` (or ``OPHION_CONFIG``) names the file; a missing default file is fine, a
    missing named one is an error. ``sections`` are the tables the file may hold (default:
    :func:`config_sections`); ``OPHION_<TABLE>__<KEY>`` sets a key of one.
    """
    env = os.environ if env is None else env
    sections = config_sections() if sections is None else sections
    _check_sections(sections)
    paths = default_paths(env)
    values: dict[str, Any] = {}
    tables: dict[str, Any] = {}

    named = config_file or (Path(env["OPHION_CONFIG"]) if env.get("OPHION_CONFIG") else None)
    path = named or paths.config_file
    if named is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: {key} is a table, write it [{key}]")
                tables[key] = read_table(sections[key], value, key, str(path))
            elif key in SETTING_NAMES:
                values[key] = _coerce(key, value, str(path))
            elif isinstance(value, dict):
                raise _unknown_table(key, sections, str(path))
            else:
                raise _unknown_key(key, str(path))
    paths = Paths(path, paths.data_dir, paths.state_dir)
    for name, cls in sections.items():
        tables.setdefault(name, cls())

    for var, value in env.items():
        if not var.startswith("OPHION_") or var in _NON_SETTING_VARS:
            continue
        key = var[len("OPHION_") :].lower()
        where = f"environment variable {var}"
        if "__" in key:  # OPHION_<TABLE>__<KEY>: no flat setting has a double underscore
            name, *keys = key.split("__")
            if name not in sections:
                raise _unknown_table(name, sections, where)
            tables[name] = _set_from_env(tables[name], name, keys, value, where)
            continue
        if key not in SETTING_NAMES:
            raise _unknown_key(key, where)
        values[key] = _coerce(key, value, where)

    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "command line")

    by_class = {sections[name]: table for name, table in tables.items()}
    return Settings(paths=paths, sections=by_class, **values)


# OPHION_* variables that are not daemon settings (read by the CLI or by default_paths).
_NON_SETTING_VARS = frozenset({"OPHION_HOME", "OPHION_CONFIG", "OPHION_API", "OPHION_TOKEN"})


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring under each field of the class ``cls`` (settings, a section), by name."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def settings_reference() -> list[tuple[str, str, str]]:
    """(name, default, description) for every setting, in declaration order."""
    docs = field_docs(Settings)
    defaults = Settings(paths=Paths(Path(), Path(), Path()))
    return [(name, str(getattr(defaults, name)), docs[name]) for name in SETTING_NAMES]
