"""Where ophion keeps its files: platformdirs, all moved under ``OPHION_HOME`` when it is set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "ophion"
# Where a system service (share/systemd/ophiond.service) keeps its state; the CLI looks here last.
SYSTEM_HOME = Path("/var/lib/ophion")


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
