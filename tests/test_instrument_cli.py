"""The edges of ``ophion instrument`` that need no Docker engine: instrument.sh, and what the
user is told when Docker refuses them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ophiond.containers.engine import _unreachable

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "instrument.sh"


def run_script(*args: str, path: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path, "HOME": str(home)},
    )


def test_instrument_sh_says_how_to_install_ophion_when_it_is_missing(tmp_path: Path) -> None:
    result = run_script("my-app", path="/usr/bin:/bin", home=tmp_path)
    assert result.returncode == 127
    assert "the ophion command is not installed" in result.stderr
    assert f'python3 -m pip install -c "{REPO}/.ci/constraints.txt" "{REPO}"' in result.stderr


def test_instrument_sh_runs_ophion_instrument(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ophion = bin_dir / "ophion"
    ophion.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ophion_cli "$@"\n')
    ophion.chmod(0o755)
    env_path = f"{bin_dir}:{os.path.dirname(shutil.which('sh') or '/bin/sh')}"
    result = subprocess.run(
        ["/bin/sh", str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PATH": env_path},
    )
    assert result.returncode == 0, result.stderr
    assert "instrument" in result.stdout and "--dry-run" in result.stdout


def test_instrument_sh_without_arguments_is_a_usage_error(tmp_path: Path) -> None:
    result = run_script(path="/usr/bin:/bin", home=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_a_docker_socket_permission_problem_names_the_docker_group() -> None:
    error = _unreachable(
        Exception("Error while fetching server API version: ('Connection aborted.', "
                  "PermissionError(13, 'Permission denied'))")
    )  # fmt: skip
    assert error.message == "permission denied on the Docker socket"
    assert error.hint is not None and "usermod -aG docker" in error.hint


def test_a_docker_engine_that_is_down_says_how_to_start_it() -> None:
    error = _unreachable(Exception("Error while fetching server API version: FileNotFoundError"))
    assert error.message.startswith("Docker is not reachable")
    assert error.hint is not None and "systemctl start docker" in error.hint
