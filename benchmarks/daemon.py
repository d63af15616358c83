"""Running ophiond as a user would, and reading what it costs from /proc.

The daemon is ``python -m ophiond`` in a subprocess with its own ``OPHION_HOME``; its CPU time
and memory are read from ``/proc`` for the daemon and every process it started, so a daemon that
decodes in worker processes is measured whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ophiond.api.client import ApiClient
from ophiond.api.contract import SqlRequest

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class DaemonFailed(RuntimeError):
    """ophiond did not start, or stopped with an error."""


@dataclass
class Daemon:
    """One ophiond process started by the benchmark."""

    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, home: Path, *flags: str, timeout: float = 60) -> Daemon:
        """Start ophiond on free ports under ``home`` and wait until its API answers."""
        home.mkdir(parents=True, exist_ok=True)
        listen_file = home / "state" / "listen.json"
        listen_file.unlink(missing_ok=True)
        log_path = home / f"ophiond-{int(time.time())}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPHION_", "OTEL_"))}
        env.update(OPHION_HOME=str(home), PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "ophiond", "--grpc-listen", "127.0.0.1:0"]
        command += ["--http-listen", "127.0.0.1:0", *flags]
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )
        daemon = cls(home, process, log_path)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise DaemonFailed(f"ophiond exited with {process.returncode}:\n{daemon.log()}")
            if time.monotonic() > deadline:
                process.kill()
                raise DaemonFailed(f"ophiond did not start in {timeout:.0f} s:\n{daemon.log()}")
            if listen_file.exists() and (home / "state" / "api.sock").exists():
                return daemon
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def listen(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "state" / "listen.json").read_text())
        return data

    @property
    def api(self) -> ApiClient:
        return ApiClient(self.home / "state" / "api.sock", timeout=600)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def accepted(self) -> dict[str, int]:
        """Records acknowledged since this daemon started, per signal, from the API's /status."""
        signals = self.api.status()["signals"]
        return {name: int(counts["accepted"]) for name, counts in signals.items()}

    def count(self, view: str) -> int:
        """Rows in one of the SQL views (all partitions), through the API."""
        result = self.api.sql(SqlRequest(f"SELECT count(*) FROM {view}"))
        return int(result["rows"][0][0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 300) -> None:
        """Stop cleanly (SIGTERM: commit what is queued, checkpoint, close the files)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise DaemonFailed(f"ophiond did not stop in {timeout:.0f} s") from None
        if code != 0:
            raise DaemonFailed(f"ophiond stopped with exit code {code}:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """Last resort when the benchmark itself fails."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------
# /proc


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state is [0], ppid [1], utime [11]."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # it ended meanwhile
    return stat[stat.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it (found by parent pid: /proc/PID/task/*/children
    needs a kernel option that is often off)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``, its live descendants and its reaped children."""
    total = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:  # utime, stime, cutime, cstime
            total += sum(int(value) for value in fields[11:15])
    return total / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy since boot (not idle, not I/O wait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    # guest time is already counted in user time; steal is time the hypervisor took away
    return (sum(fields[:8]) - idle - iowait) / _CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended: it holds no memory
    return 0


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` plus that of its live descendants."""
    return sum(_status_kib(member, "VmHWM") for member in process_tree(pid)) * 1024


def rss_bytes(pid: int) -> int:
    """Current VmRSS of ``pid`` and its live descendants."""
    return sum(_status_kib(member, "VmRSS") for member in process_tree(pid)) * 1024


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` and its live descendants: each page shared by several
    processes (the Python, pyarrow and protobuf libraries the decode workers and the daemon all
    map) counted once in total, not once per process as summing their RSS does."""
    return sum(_pss_kib(member) for member in process_tree(pid)) * 1024


class RssSampler:
    """Samples the resident memory of a process tree in a thread; keeps the largest totals.

    VmHWM is per process and only grows; the sampler gives the peak of one phase, and the peak
    of several processes taken together, which summing their VmHWM would overstate. It keeps
    the peak of the summed RSS and of the summed PSS (see :func:`pss_bytes`).
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.peak_pss = max(self.peak_pss, pss_bytes(self.pid))
            self._stop.wait(self.interval)


def directory_bytes(path: Path) -> int:
    """Bytes of all files under ``path`` (apparent size)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextmanager
def running(home: Path, *flags: str) -> Iterator[Daemon]:
    """A started daemon, stopped cleanly at the end of the block (killed if the block fails)."""
    daemon = Daemon.start(home, *flags)
    try:
        yield daemon
    except BaseException:
        daemon.kill()
        raise
    daemon.stop()
