"""A background ophiond: find it by its pid file, start it, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ophiond.config import Paths
from ophiond.errors import OphionError


@dataclass
class DaemonProcess:
    """What the state directory says about a running daemon."""

    pid: int
    listen: dict[str, Any]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _is_ophiond(pid: int) -> bool:
    """True when ``pid`` runs ophiond (guards against a recycled pid in a stale pid file)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except PermissionError:
        return True
    return b"ophiond" in cmdline


def find_running(paths: Paths) -> DaemonProcess | None:
    """The daemon of this state directory, if its pid file names a live ophiond."""
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not (_alive(pid) and _is_ophiond(pid)):
        return None
    try:
        listen = json.loads(paths.listen_file.read_text())
    except (FileNotFoundError, ValueError):
        listen = {}
    return DaemonProcess(pid, listen)


def ophiond_command() -> list[str]:
    """How to run ophiond with the Python running this process."""
    return [sys.executable, "-m", "ophiond"]


def start(paths: Paths, extra_args: list[str], timeout: float) -> DaemonProcess:
    """Start ophiond in the background; return once it serves, or raise with its last log lines."""
    running = find_running(paths)
    if running:
        raise OphionError(
            f"ophiond is already running (pid {running.pid})",
            hint="ophion daemon stop, then start again to apply new settings",
        )
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    log_offset = paths.log_file.stat().st_size if paths.log_file.exists() else 0
    with open(paths.log_file, "ab") as log:
        process = subprocess.Popen(
            [*ophiond_command(), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the terminal that started it
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise OphionError(
                f"ophiond exited with code {code} while starting:\n{_log_tail(paths.log_file, log_offset)}",
                hint=f"the full log is in {paths.log_file}",
            )
        running = find_running(paths)
        if running and running.pid == process.pid and paths.api_socket.exists():
            return running
        time.sleep(0.05)
    raise OphionError(
        f"ophiond (pid {process.pid}) did not become ready within {timeout:g}s",
        hint=f"see {paths.log_file}",
    )


def stop(paths: Paths, timeout: float) -> int | None:
    """SIGTERM the daemon and wait until it has drained and exited; return its pid (None if
    it was not running)."""
    running = find_running(paths)
    if running is None:
        return None
    try:
        os.kill(running.pid, signal.SIGTERM)
    except PermissionError:
        raise OphionError(
            f"not allowed to stop ophiond (pid {running.pid}): it belongs to another user",
            hint="run the command as that user, or use systemctl stop ophiond",
        ) from None
    except ProcessLookupError:
        return running.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(running.pid):
            return running.pid
        time.sleep(0.05)
    raise OphionError(
        f"ophiond (pid {running.pid}) is still draining after {timeout:g}s",
        hint=f"wait, or force it with: kill -9 {running.pid} (unacknowledged data is then lost)",
    )


def _log_tail(path: Path, offset: int, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])
