"""Decode workers: processes that turn request bodies into Arrow IPC streams.

Parsing and flattening an OTLP request is Python work bound by one GIL; in worker processes it
runs on every core while the daemon's own process only moves bytes, journals and inserts. A
receiving thread borrows an idle worker, sends it the body over a pipe, and gets back the
decoded tables as Arrow IPC streams, which the journal stores as they are and pyarrow reads
without copying. With N workers, N requests decode at once; more wait for a free worker.

Workers are Python processes of their own (``python -m ophiond.otlp.workers``, started with
``subprocess``: the daemon already runs threads, which ``fork`` would copy half-way, and
``multiprocessing`` would add a resource-tracker process and reset the daemon's signal mask).
They ignore SIGINT and SIGTERM (the daemon decides when they stop: a Ctrl-C or a systemd stop
reaches the whole process group, but requests in flight still need them) and exit when their
pipe closes, also when the daemon is killed. A worker that dies is replaced; the request it had
gets a retryable error.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from ophiond.batchio import write_all
from ophiond.errors import DecodeFailed, InvalidPayload
from ophiond.model import DEFAULT_LIMITS, DecodedBatch, IngestLimits, Signal

log = logging.getLogger(__name__)

_SIGNALS = tuple(Signal)
_REQUEST_HEAD = struct.Struct("<BBq")  # signal index, JSON (1) or protobuf (0), received ns


def decode_body(
    signal_: Signal,
    body: bytes,
    as_json: bool,
    received_ns: int,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> DecodedBatch:
    """Parse and flatten one request body (in a worker, or in the caller's thread).

    Raises :class:`InvalidPayload` for a body that cannot be decoded, whatever the reason.
    """
    from ophiond.otlp.decode import decode, parse_json, parse_protobuf

    notes: list[str] = []
    try:
        request = parse_json(signal_, body, notes) if as_json else parse_protobuf(signal_, body)
        return decode(signal_, request, received_ns, limits, notes)
    except InvalidPayload:
        raise
    except Exception as e:
        # A decoder bug this body triggers: the client would only send it again, so it hears
        # that the body cannot be decoded, in a worker or not; the traceback goes to the log.
        log.exception("cannot decode an OTLP %s request", signal_)
        raise InvalidPayload(f"cannot decode the request ({type(e).__name__}: {e})") from e


# -- the pipe protocol: a 4-byte length, then the message ---------------------------------------

_LENGTH = struct.Struct("<I")
_PIPE_SIZE = 1 << 20  # fewer wake-ups per 400 kB request; Linux lets anyone ask for 1 MiB


def _write_message(fd: int, parts: list[bytes | memoryview]) -> None:
    write_all(fd, [_LENGTH.pack(sum(len(p) for p in parts)), *parts])


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer in time")
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("the pipe closed")
        got += n
    return buf


def _read_message(fd: int, timeout: float | None = None) -> bytearray:
    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size, deadline))
    return _read_exactly(fd, size, deadline)


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # a smaller pipe only costs a few more wake-ups


# -- the worker process: ``python -m ophiond.otlp.workers`` ------------------------------------


def worker_main(argv: list[str]) -> None:
    """Decode requests from stdin, answer on stdout, until stdin closes.

    ``argv`` holds the :class:`IngestLimits` as JSON, when not the defaults.
    """
    from ophiond.batchio import encode_tables, pack

    limits = IngestLimits(**json.loads(argv[0])) if argv else DEFAULT_LIMITS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    source, sink = sys.stdin.fileno(), sys.stdout.fileno()
    # Nothing else may write to the answer pipe: print() and warnings go to stderr.
    sys.stdout = sys.stderr
    _grow_pipe(sink)
    while True:
        try:
            message = _read_message(source)
        except (EOFError, OSError):
            return  # the daemon closed the pipe or is gone
        index, as_json, received_ns = _REQUEST_HEAD.unpack_from(message)
        body = bytes(memoryview(message)[_REQUEST_HEAD.size :])
        del message
        try:
            batch = decode_body(_SIGNALS[index], body, bool(as_json), received_ns, limits)
        except InvalidPayload as e:
            reply = pack({"invalid": e.message}, {})
        else:
            header = {
                "accepted": batch.accepted,
                "rejected": batch.rejected,
                "problems": batch.problems,
            }
            reply = pack(header, encode_tables(batch.tables))
            del batch
        _write_message(sink, reply)


class _Worker:
    def __init__(self, limits: IngestLimits) -> None:
        import ophiond

        package_root = str(Path(ophiond.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ophiond.otlp.workers", json.dumps(asdict(limits))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_worker = self.process.stdin.fileno()
        self.from_worker = self.process.stdout.fileno()
        _grow_pipe(self.to_worker)

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Longest a request may take to decode (a 20 MiB OTLP/JSON body takes a few seconds); a worker
# that takes longer is taken to be stuck, and is replaced.
DECODE_TIMEOUT_S = 120.0
# Longest a request waits for a free worker before it is answered "retry later".
WAIT_FOR_WORKER_S = 30.0


class DecodePool:
    """``processes`` decode workers shared by every receiving thread, decoding within
    ``limits``."""

    def __init__(self, processes: int, limits: IngestLimits = DEFAULT_LIMITS) -> None:
        self.processes = processes
        self.limits = limits
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        for _ in range(self.processes):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self.limits)
        with self._lock:
            self._workers.append(worker)
        self._idle.put(worker)

    def _top_up(self) -> None:
        """Start workers again where starting one failed before (no processes, no memory)."""
        with self._lock:
            missing = 0 if self._stopped else self.processes - len(self._workers)
        for _ in range(missing):
            try:
                self._add()
            except OSError as e:
                log.error("cannot start a decode worker, trying again later: %s", e)
                return

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers]

    def decode(self, signal_: Signal, body: bytes, as_json: bool, received_ns: int) -> DecodedBatch:
        """Decode in a worker; raise :class:`InvalidPayload` or :class:`DecodeFailed`."""
        from ophiond.batchio import LazyTables, unpack

        self._top_up()
        try:
            worker = self._idle.get(timeout=WAIT_FOR_WORKER_S)
        except queue.Empty:
            raise DecodeFailed("no decode worker is free") from None
        if self._stopped:
            raise DecodeFailed("ophiond is shutting down")
        head = _REQUEST_HEAD.pack(_SIGNALS.index(signal_), int(as_json), received_ns)
        try:
            _write_message(worker.to_worker, [head, body])
            reply = _read_message(worker.from_worker, DECODE_TIMEOUT_S)
        except (EOFError, OSError) as e:  # (TimeoutError is an OSError)
            self._replace(worker)
            raise DecodeFailed(f"a decode worker failed while decoding: {e}") from e
        self._idle.put(worker)
        header, streams = unpack(reply)
        if "invalid" in header:
            raise InvalidPayload(header["invalid"])
        return DecodedBatch(
            signal_,
            LazyTables(streams),
            header["accepted"],
            header["rejected"],
            header["problems"],
            streams=streams,
        )

    def _replace(self, worker: _Worker) -> None:
        if worker.process.poll() is None:
            worker.process.kill()  # stuck, or its pipe broke: it cannot be trusted with more
        code = worker.process.wait()
        log.error("decode worker %s ended (code %s); starting another", worker.process.pid, code)
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.close()
        self._top_up()

    def stop(self) -> None:
        """Close every worker's pipes (they exit) and wait for them. Requests still arriving
        are answered "retry later"."""
        with self._lock:
            self._stopped = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


if __name__ == "__main__":
    worker_main(sys.argv[1:])
