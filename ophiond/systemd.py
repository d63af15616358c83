"""ophiond as a systemd service: write its unit (system-wide or for one user) and enable it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ophiond.control import ophiond_command
from ophiond.errors import OphionError


def share_dir() -> Path:
    """share/ as installed inside the package, or beside the sources in a checkout."""
    package = Path(__file__).parent
    installed = package / "_share"
    return installed if installed.is_dir() else package.parent / "share"


@dataclass
class UnitInstall:
    """What install_unit wrote, whether systemd reloaded it, and what the user should know."""

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
