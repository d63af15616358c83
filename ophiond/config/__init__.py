"""Settings: defaults < config.toml < ``OPHION_*`` environment < command-line flags.

Every field of :class:`Settings` has a docstring; ``docs/configuration.md`` is written from them
and a test keeps the two in step. Paths come from platformdirs, all moved under ``OPHION_HOME``
when it is set (:mod:`ophiond.config.paths`); durations, sizes and addresses are parsed by
:mod:`ophiond.config.values`.

Besides its flat keys, config.toml may hold tables (``[alerting]``), each read into a *section*:
a dataclass documented the same way, listed in :func:`config_sections`
(:mod:`ophiond.config.tables`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ophiond.config.paths import APP_NAME, SYSTEM_HOME, Paths, default_paths
from ophiond.config.tables import (
    Section,
    check_sections,
    config_sections,
    default_sections,
    read_table,
    set_from_env,
    unknown_table,
)
from ophiond.config.values import (
    ListenAddress,
    coerce_scalar,
    is_loopback,
    parse_duration,
    parse_listen,
    parse_size,
)
from ophiond.errors import ConfigError
from ophiond.model import IngestLimits

if TYPE_CHECKING:
    from ophiond.serving import ClientLimits

__all__ = [
    "APP_NAME",
    "DEFAULT_API_LISTEN",
    "SETTING_NAMES",
    "SYSTEM_HOME",
    "ListenAddress",
    "Paths",
    "Section",
    "Settings",
    "ValidSettings",
    "config_sections",
    "default_paths",
    "default_workers",
    "field_docs",
    "is_loopback",
    "load_settings",
    "parse_duration",
    "parse_listen",
    "parse_size",
    "read_table",
    "settings_reference",
]

# The TCP API's address when it is just turned on (the original OPHION platform's API port).
DEFAULT_API_LISTEN = "127.0.0.1:8080"

V = TypeVar("V")
T = TypeVar("T")


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
    sections: dict[type[Any], Any] = field(default_factory=default_sections, repr=False)

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
    return coerce_scalar(_FIELD_TYPES[name], name, value, where)


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
    check_sections(sections, SETTING_NAMES)
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
                raise unknown_table(key, sections, str(path))
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
                raise unknown_table(name, sections, where)
            tables[name] = set_from_env(tables[name], name, keys, value, where)
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
