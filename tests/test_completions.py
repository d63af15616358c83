"""Shell completions: the committed scripts are current, and each shell completes with them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ophion_cli.completions import SCRIPTS, generate

COMPLETIONS = Path(__file__).resolve().parent.parent / "completions"


def test_committed_scripts_match_the_commands(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in SCRIPTS:
        assert (tmp_path / name).read_text() == (COMPLETIONS / name).read_text(), (
            f"completions/{name} is out of date: run python -m ophion_cli.completions"
        )


def _bash_complete(*words: str) -> list[str]:
    script = (
        f"source {COMPLETIONS / 'ophion.bash'}; COMP_WORDS=(ophion {' '.join(words)}); "
        f"COMP_CWORD={len(words)}; _ophion; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completes_commands_subcommands_and_options() -> None:
    assert _bash_complete("tr") == ["trace", "traces"]
    assert _bash_complete("daemon", "st") == ["start", "status", "stop"]
    assert _bash_complete("traces", "--min") == ["--min-duration"]
    # An option's value does not confuse it.
    assert "--follow" in _bash_complete("logs", "--since", "1h", "--f")


@pytest.mark.skipif(
    shutil.which("fish") is None, reason="fish is not installed (.ci/run installs it)"
)
def test_fish_completes_with_descriptions() -> None:
    script = f"source {COMPLETIONS / 'ophion.fish'}; complete -C 'ophion daemon st'"
    out = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[0] for line in out.splitlines()] == ["start", "status", "stop"]


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="zsh is not installed (.ci/run installs it)"
)
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", str(COMPLETIONS / "_ophion")], check=True)
