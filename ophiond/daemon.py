"""ophiond: start the parts, serve until SIGTERM/SIGINT, drain the queue, close cleanly.

Start order: lock the state directory -> open the store -> start the writer -> start the API
and the receivers -> write the pid and listen files -> READY=1. Stop order is the reverse, so
every request already accepted by a receiver is committed before the store closes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ophiond import __version__
from ophiond.config import ValidSettings, load_settings
from ophiond.errors import OphionError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# systemd notification protocol (sd_notify), without a libsystemd dependency


def sd_notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to ``$NOTIFY_SOCKET``; False when not under systemd."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as e:
            log.warning("sd_notify %s failed: %s", state, e)
            return False
    return True


def _watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd asks for, or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The daemon


class StateDirLock:
    """An flock on ``ophiond.lock``: one daemon per state directory, released even on SIGKILL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OphionError(
                f"another ophiond already runs with state directory {self.path.parent}",
                hint="stop it first (ophion daemon stop), or set OPHION_HOME to run a second one",
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Daemon:
    """All the running parts of ophiond."""

    def __init__(self, settings: ValidSettings) -> None:
        self.settings = settings
        self.paths = settings.paths
        self._stop = threading.Event()
        self.started_at = time.time()
        # Listeners that may stay off; set before the API can answer a status request.
        self.grpc: Any = None
        self.http: Any = None
        self.api_tcp: Any = None
        self.decode_pool: Any = None

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        from ophiond.api.server import ApiServer
        from ophiond.api.tokens import TokenStore
        from ophiond.otlp.ingest import Ingest
        from ophiond.scheduler import Scheduler
        from ophiond.state.audit import AuditLog
        from ophiond.state.store import StateStore
        from ophiond.store.feed import LogFeed
        from ophiond.store.partitions import PartitionSet, connect
        from ophiond.store.query import QuerySlots
        from ophiond.store.readers import ReaderLimits, limit_readers, writer_reserve
        from ophiond.store.writer import Writer
        from ophiond.telemetry import Telemetry

        settings, paths = self.settings, self.paths
        lock = StateDirLock(paths.lock_file)
        lock.acquire()
        started: list[Any] = []
        # Threads inherit the signal mask of the thread that creates them: with SIGTERM and
        # SIGINT blocked while the parts start, every thread (ours, grpc's, DuckDB's) blocks
        # them, and the kernel delivers them to the main thread, which wakes at once.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            paths.data_dir.mkdir(parents=True, exist_ok=True)
            self.state = StateStore.open(paths.data_dir)
            self.audit = AuditLog(self.state)
            self.telemetry = Telemetry()
            self.partitions = PartitionSet(
                connect(settings.memory_limit, paths.data_dir, max_spill=settings.sql_max_spill),
                paths.data_dir,
            )
            self.partitions.open()
            for damaged in self.partitions.damaged:
                self.audit.record("ophiond", "partition.set_aside", damaged["partition"], **damaged)
            readers = limit_readers(
                self.partitions,
                ReaderLimits(
                    query_memory=settings.sql_max_memory,
                    max_spill=settings.sql_max_spill,
                    writer_reserve=writer_reserve(settings.memory_limit, settings.sql_max_spill),
                    temp_dir=paths.data_dir / ".tmp",
                ),
            )
            self.writer = Writer(
                self.partitions,
                self.telemetry,
                capacity=settings.queue_size,
                disk_budget=settings.retention_max_disk,
                max_age_s=settings.retention_max_age,
            )
            self.feed = LogFeed()
            self.writer.on_commit = self._publish
            self.writer.make_room = readers.stop
            self.writer.audit = self.audit
            self.sql_slots = QuerySlots(settings.sql_max_concurrent)
            self.writer.recover()
            self.writer.start()
            self.partitions.before_read = self.writer.sync
            self.scheduler = Scheduler()
            self.scheduler.every(
                "housekeeping",
                settings.housekeeping_interval,
                self.writer.housekeep,
                "retention by age and disk budget, partition roll-over, checkpoint when idle",
                first_run_in_s=settings.housekeeping_interval,  # (the writer ran one at start)
            )
            self.scheduler.start()
            if settings.decode_workers:
                from ophiond.otlp.workers import DecodePool

                self.decode_pool = DecodePool(settings.decode_workers, settings.ingest_limits)
                self.decode_pool.start()
            ingest = Ingest(
                self.writer,
                self.telemetry,
                settings.ingest_key,
                self.decode_pool,
                settings.ingest_limits,
            )

            self.tokens = TokenStore(paths.tokens_file, paths.admin_token_file)
            self.tokens.ensure_admin_token()
            routes = self._routes()
            limits = settings.client_limits
            self.api = ApiServer(paths.api_socket, routes, limits)
            self.api.start()
            started.append(self.api)
            if settings.api_listen is not None:
                from ophiond.api.tcp import TcpApiServer

                self.api_tcp = TcpApiServer(
                    settings.api_listen,
                    routes,
                    self.tokens,
                    settings.api_rate_limit,
                    settings.api_rate_burst,
                    limits,
                )
                self.api_tcp.start()
                started.append(self.api_tcp)
            if settings.grpc_listen is not None:
                from ophiond.otlp.grpc import GrpcReceiver

                self.grpc = GrpcReceiver(ingest, settings.grpc_listen, settings.max_request_size)
                self.grpc.start()
                started.append(self.grpc)
            if settings.http_listen is not None:
                from ophiond.otlp.http import HttpReceiver

                self.http = HttpReceiver(
                    ingest, settings.http_listen, settings.max_request_size, limits
                )
                self.http.start()
                started.append(self.http)

            self.audit.record(
                "ophiond",
                "daemon.start",
                None,
                version=__version__,
                pid=os.getpid(),
                listen=self._listen(),
            )
            # Every thread is started: the main thread takes the stop signals from now on,
            # before anyone learns from the listen file or systemd that the daemon is up (a
            # signal sent at once must be handled, not left pending behind the mask).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
            self._write_state_files()
            sd_notify("READY=1\nSTATUS=receiving OTLP")
            log.info(
                "ophiond %s ready (pid %d, data in %s)", __version__, os.getpid(), paths.data_dir
            )
            failed = self._serve()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
            sd_notify("STOPPING=1")
            self._shutdown(started)
            lock.release()
        return 1 if failed else 0

    def _serve(self) -> bool:
        """Serve until asked to stop; True when the store failed for good (exit 1, so that
        systemd's Restart=on-failure starts a new process)."""
        watchdog = _watchdog_interval()
        next_ping = time.monotonic()
        # Short waits as well: a stop signal that reached another thread anyway runs its
        # handler only when the main thread next wakes.
        while not self._stop.wait(min(watchdog or 1.0, 1.0)):
            if self.writer.fatal is not None:
                log.critical(
                    "stopping: DuckDB invalidated the store (%s); a new ophiond process stores "
                    "every acknowledged record from the journal",
                    self.writer.fatal,
                )
                return True
            if not watchdog or time.monotonic() < next_ping:
                continue
            next_ping = time.monotonic() + watchdog
            # Pet the watchdog only while the writer makes progress: a stuck writer means
            # requests hang, and systemd should restart us.
            if self.writer.is_healthy():
                sd_notify("WATCHDOG=1")
            else:
                log.error("writer is stalled; withholding the watchdog ping")
        return False

    def _shutdown(self, started: list[Any]) -> None:
        # Receivers first (in-flight requests finish: they wait for their commit), then the
        # writer drains what is queued, then the store closes.
        for part in reversed(started):
            try:
                part.stop()
            except OSError as e:
                log.warning("stopping %s: %s", type(part).__name__, e)
        if self.decode_pool is not None:
            self.decode_pool.stop()
        if hasattr(self, "scheduler"):
            self.scheduler.stop()
        if hasattr(self, "writer"):
            self.writer.stop()
        if hasattr(self, "partitions"):
            self.partitions.close()
        if hasattr(self, "state"):
            if hasattr(self, "writer"):
                self.audit.record(
                    "ophiond", "daemon.stop", None, pid=os.getpid(), **self.telemetry.snapshot()
                )
            self.state.close()
        for path in (self.paths.pid_file, self.paths.listen_file):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        if hasattr(self, "writer"):
            log.info("stopped cleanly; %s", _summary(self.telemetry.snapshot()))

    def _write_state_files(self) -> None:
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        listen = {**self._listen(), "pid": os.getpid()}
        _atomic_write(self.paths.listen_file, json.dumps(listen, indent=2) + "\n")
        _atomic_write(self.paths.pid_file, f"{os.getpid()}\n")

    def _publish(self, batch: Any) -> None:
        """Hand committed log records to ``ophion logs --follow`` followers."""
        logs = batch.tables.get("logs")
        if logs is not None:
            self.feed.publish(logs)

    def _listen(self) -> dict[str, str | None]:
        """The addresses actually listened on (ports of 0 resolved)."""
        return {
            "grpc": str(self.grpc.address) if self.grpc else None,
            "http": str(self.http.address) if self.http else None,
            "api": str(self.paths.api_socket),
            "api_tcp": str(self.api_tcp.address) if self.api_tcp else None,
        }

    # -- API ---------------------------------------------------------------------------------

    def _routes(self) -> list[Any]:
        from ophiond.api import contract
        from ophiond.api.routes import audit_routes, query_routes
        from ophiond.api.server import Route
        from ophiond.api.tokens import token_routes

        return [
            Route(contract.STATUS, self.status),
            Route(contract.SQL, self.sql),
            *token_routes(self.tokens, self.audit),
            *audit_routes(self.audit),
            *query_routes(self.partitions, self.feed, self.settings.sql_timeout),
        ]

    def status(self, _request: Any) -> dict[str, Any]:
        partitions = list(self.partitions.partitions)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": dt.datetime.fromtimestamp(self.started_at, dt.UTC).isoformat(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "listen": self._listen(),
            "signals": self.telemetry.snapshot(),
            "queue": {"depth": self.writer.depth, "capacity": self.settings.queue_size},
            "jobs": self.scheduler.jobs(),
            "state": {
                "path": str(self.state.path),
                "bytes": self.state.size(),
                "schema": self.state.version,
            },
            "storage": {
                "data_dir": str(self.paths.data_dir),
                "bytes": sum(p.size() for p in partitions),
                "partitions": len(partitions),
                "oldest_partition": partitions[0].opened_at.isoformat() if partitions else None,
                "retention_max_age_s": self.settings.retention_max_age,
                "retention_max_disk": self.settings.retention_max_disk,
                **self._storage_health(),
            },
        }

    def _storage_health(self) -> dict[str, Any]:
        """Whether flushes work, and everything set aside or lost: ``ophion status`` shows it."""
        writer = self.writer
        since = writer.failing_since
        return {
            "failing": writer.storage_error is not None,
            "error": writer.storage_error,
            "failing_since": (
                dt.datetime.fromtimestamp(since, dt.UTC).isoformat() if since else None
            ),
            "dead_letters": writer.dead_letters.summary(),
            "journal_losses": [
                {
                    "segment": loss.segment,
                    "requests": loss.requests,
                    "acknowledged": loss.acknowledged,
                    "reason": loss.reason,
                    "message": loss.describe(),
                }
                for loss in writer.losses
            ],
            "damaged_partitions": list(self.partitions.damaged),
        }

    def sql(self, request: Any) -> dict[str, Any]:
        from ophiond.api.contract import SqlRequest
        from ophiond.store.query import run_query

        query = SqlRequest(request.body.get("sql"), request.body.get("max_rows", 10_000))
        query.check()
        return run_query(
            self.partitions, query.sql, query.max_rows, self.settings.sql_timeout, self.sql_slots
        ).to_json()


def _summary(snapshot: dict[str, dict[str, int]]) -> str:
    return ", ".join(
        f"{name}: {c['accepted']} accepted, {c['stored']} stored" for name, c in snapshot.items()
    )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Command line (argparse: the daemon must not import the CLI stack)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ophiond",
        description="Receive OpenTelemetry traces, metrics and logs over OTLP and store them in "
        "DuckDB. Runs in the foreground; stop it with SIGTERM or Ctrl-C.",
        epilog="Every flag but --config and --check-config has a config.toml key and an OPHION_* "
        "variable; see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"ophiond {__version__}")
    parser.add_argument(
        "--config", type=Path, help="config file (default: $OPHION_HOME/config.toml)"
    )
    parser.add_argument(
        "--grpc-listen", metavar="HOST:PORT", help="OTLP/gRPC address or 'off' (127.0.0.1:4317)"
    )
    parser.add_argument(
        "--http-listen", metavar="HOST:PORT", help="OTLP/HTTP address or 'off' (127.0.0.1:4318)"
    )
    parser.add_argument(
        "--api-listen",
        metavar="HOST:PORT",
        help="TCP address of the local API, for bearer tokens, or 'off' (off; 127.0.0.1:8080)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="where the DuckDB files live")
    parser.add_argument(
        "--state-dir", metavar="DIR", help="pid file, API socket, listen file, tokens"
    )
    parser.add_argument(
        "--retention-max-age", metavar="DURATION", help="delete data older than this (7d)"
    )
    parser.add_argument(
        "--retention-max-disk", metavar="SIZE", help="disk budget of the store (5GB)"
    )
    parser.add_argument(
        "--ingest-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on the receivers"
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        metavar="RECORDS",
        help="records waiting before receivers refuse (150000)",
    )
    parser.add_argument(
        "--max-request-size", metavar="SIZE", help="largest accepted request body (20MiB)"
    )
    parser.add_argument("--memory-limit", metavar="SIZE", help="DuckDB memory limit (64MB)")
    parser.add_argument(
        "--decode-workers",
        metavar="N",
        help="processes decoding OTLP requests; 0 decodes in the daemon's process (auto)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the config file, OPHION_* variables and the other flags given, say whether "
        "they are valid (exit 0) or not (exit 2), and exit without starting anything",
    )
    return parser


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Under systemd the journal stamps each line; elsewhere we do.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    logger = logging.getLogger("ophiond")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # The scheduler's own warnings (a job that could not start in time) in the same format;
    # its per-run chatter (INFO: "Running job ...") stays out.
    scheduler_log = logging.getLogger("apscheduler")
    scheduler_log.handlers[:] = [handler]
    scheduler_log.setLevel(max(logging.WARNING, logger.level))
    scheduler_log.propagate = False


def _checked(config_file: Path) -> str:
    if config_file.is_file():
        return f"config OK: {config_file}"
    return f"config OK: no config file ({config_file}), defaults"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ophiond``."""
    # Arrow's default allocator (mimalloc) keeps freed memory for reuse; batches come and go
    # by the hundred per second here, and with the C allocator the daemon and its decode
    # workers (which inherit this) hold about 60 MB less. Read when pyarrow is first imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    args = build_parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", "check_config") and value is not None
    }
    try:
        settings = load_settings(overrides, config_file=args.config).validate()
    except OphionError as e:
        print(f"ophiond: {e.message}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return 2
    if args.check_config:
        # Before the lock, the store and the state directory: it may run beside a daemon.
        print(_checked(settings.paths.config_file))
        return 0
    _setup_logging(settings.log_level)
    # Stored telemetry, the socket and the state files are for the daemon's user alone.
    os.umask(0o077)
    daemon = Daemon(settings)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    try:
        return daemon.run()
    except OphionError as e:
        log.error("%s%s", e.message, f" ({e.hint})" if e.hint else "")
        return 1
