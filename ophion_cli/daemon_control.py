"""Managing a background ophiond: start, stop, find, and install as a systemd unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
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
    """How to run ophiond with the same Python as this CLI."""
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


# ---------------------------------------------------------------------------------------------
# systemd units


def share_dir() -> Path:
    """share/ as installed inside the package, or beside the sources in a checkout."""
    import ophiond

    installed = Path(ophiond.__file__).parent / "_share"
    return installed if installed.is_dir() else Path(ophiond.__file__).parent.parent / "share"


@dataclass
class UnitInstall:
    unit_path: Path
    config_path: Path | None
    reloaded: bool
    warnings: list[str]


def _ophiond_exec() -> str:
    found = shutil.which("ophiond")
    if found:
        return str(Path(found).absolute())
    return " ".join(ophiond_command())


def _readable_by_others(executable: str) -> bool:
    """False when a directory on the way to ``executable`` shuts out other users."""
    path = Path(executable.split()[0]).absolute()
    for part in [*reversed(path.parents), path]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        needed = stat.S_IXOTH if part != path else stat.S_IXOTH | stat.S_IROTH
        if not mode & needed:
            return False
    return True


def install_unit(user: bool, now: bool) -> UnitInstall:
    """Write ophiond.service for systemd (system-wide, or for this user with ``user``)."""
    import platformdirs

    warnings: list[str] = []
    exec_start = _ophiond_exec()
    if user:
        template = share_dir() / "systemd" / "ophiond-user.service"
        unit_dir = Path(platformdirs.user_config_dir("systemd")) / "user"
        config_path = None
    else:
        if os.geteuid() != 0:
            raise OphionError(
                "installing the system unit needs root",
                hint="run it with sudo, or install a unit for your user with --user",
            )
        template = share_dir() / "systemd" / "ophiond.service"
        unit_dir = Path("/etc/systemd/system")
        config_path = Path("/etc/ophion/config.toml")
        if not _readable_by_others(exec_start):
            warnings.append(
                f"{exec_start} is not readable by other users, and the system unit runs ophiond "
                "as an unprivileged dynamic user: install ophion where others can read it "
                "(e.g. a virtualenv under /opt) or the service will fail to start"
            )
    text = template.read_text().replace("@OPHIOND@", exec_start)
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / "ophiond.service"
    unit_path.write_text(text)
    if config_path is not None and not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(share_dir() / "config.example.toml", config_path)
    reloaded = _systemctl(user, "daemon-reload")
    if now and reloaded:
        if not _systemctl(user, "enable", "--now", "ophiond.service"):
            warnings.append(
                "systemctl enable --now ophiond.service failed; see systemctl status ophiond"
            )
    elif now:
        warnings.append("systemd is not running here, so the unit was written but not started")
    return UnitInstall(unit_path, config_path, reloaded, warnings)


def _systemctl(user: bool, *args: str) -> bool:
    """Run systemctl when systemd manages this machine; False when it does not or fails."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return False
    command = ["systemctl", *(["--user"] if user else []), *args]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0
