"""CI installs and tests ophion exactly as README.md tells a new user, with the constraints file,
which pins every dependency at a version pyproject.toml allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = "-c .ci/constraints.txt"


def _commands(section: str) -> list[str]:
    """The commands of the first ``sh`` block under README's ``## section``, comments cut."""
    readme = (REPO / "README.md").read_text()
    body = readme.split(f"\n## {section}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", body, flags=re.S)
    assert block, f"README.md's {section} has no sh block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_readmes_set_up_and_test_commands() -> None:
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    install, daemon = _commands("Set up")  # two commands: install, run the daemon
    assert install == f"python3 -m pip install {CONSTRAINTS} ."
    assert install in ci
    assert daemon == "ophiond"
    assert any(re.match(r"(\w+=\S+ )*ophiond( |$)", line) for line in ci)
    (test,) = _commands("Test")
    assert test in ci
    installs = [line for line in ci if "pip install" in line]
    assert installs and all(CONSTRAINTS in line for line in installs), installs


def test_the_constraints_pin_every_dependency_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    pins = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned: run .ci/refresh-constraints"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject.toml's {requirement}: "
            "run .ci/refresh-constraints"
        )
