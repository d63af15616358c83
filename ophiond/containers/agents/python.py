"""Python: opentelemetry-distro and the instrumentations of the libraries the app uses, built
with ``pip install --target`` for the container's own Python version, libc and machine, and
loaded by the ``sitecustomize`` that opentelemetry-instrumentation ships (the Operator's way).
"""

from __future__ import annotations

import ast
import json
import posixpath
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ophiond.containers.agents import (
    Bundle,
    Target,
    cache_key,
    reuse_or_build,
    run_tool,
    write_manifest,
)
from ophiond.containers.engine import exec_json
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

# The contrib release the bundles are built from (it pins the SDK it was released with).
# Changing it changes every bundle's cache key, so containers move to new bundles only when
# they are instrumented again.
CONTRIB_VERSION = "0.66b1"
BASE_PACKAGES = (
    f"opentelemetry-distro=={CONTRIB_VERSION}",
    "opentelemetry-exporter-otlp-proto-http",
)
OLDEST_PYTHON = (3, 9)  # what the contrib release supports

# Runs in the container's interpreter: what the bundle must match.
_INSPECT = """
import json, platform, sys
try:
    from importlib import metadata
    dists = {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}
except Exception:
    dists = {}
print(json.dumps({"version": list(sys.version_info[:3]), "implementation": sys.implementation.name,
                  "libc": platform.libc_ver(), "machine": platform.machine(), "distributions": dists}))
"""

_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


class PythonAgent:
    language = "python"

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        runtime = self._runtime(target)
        version = tuple(runtime["version"][:2])
        if runtime.get("implementation") != "cpython" or version < OLDEST_PYTHON:
            found = ".".join(map(str, runtime["version"]))
            raise ContainerError(
                f"the container runs {runtime.get('implementation')} {found}; the Python agent "
                f"needs CPython {'.'.join(map(str, OLDEST_PYTHON))} or newer"
            )
        libc_name = "musl" if not runtime["libc"][0] else "glibc"
        machine = runtime.get("machine") or _MACHINES.get(target.arch, target.arch)
        table = _bootstrap_table(target)
        instrumentations = matching_instrumentations(table, runtime["distributions"])
        minor = f"{version[0]}.{version[1]}"
        key = cache_key("python", minor, libc_name, machine, CONTRIB_VERSION, instrumentations)
        libraries = sorted(
            name.removeprefix("opentelemetry-instrumentation-").split("=")[0]
            for name in instrumentations
        )
        description = (
            f"opentelemetry-distro {CONTRIB_VERSION} for CPython {minor} ({libc_name}, "
            f"{machine}) with {len(instrumentations)} instrumentations: {', '.join(libraries)}"
        )
        details = {
            "python": minor,
            "libc": libc_name,
            "machine": machine,
            "instrumentations": instrumentations,
        }
        bundle = Bundle("python", key, description, target.cache_dir / key, details=details)
        return reuse_or_build(
            target,
            bundle,
            dry_run,
            lambda scratch: self._build(
                target, bundle, scratch, version, libc_name, runtime["libc"][1], machine
            ),
        )

    def _runtime(self, target: Target) -> dict[str, Any]:
        executable = target.detection.executable
        candidates = [executable] if executable and _is_python(executable) else []
        candidates += ["python3", "python"]
        last: ContainerError | None = None
        for candidate in candidates:
            try:
                runtime: dict[str, Any] = exec_json(
                    target.container, [candidate, "-c", _INSPECT], "asking the container's Python"
                )
                return runtime
            except ContainerError as e:
                last = e
        assert last is not None
        raise last

    def _build(
        self,
        target: Target,
        bundle: Bundle,
        scratch: Path,
        version: tuple[int, ...],
        libc_name: str,
        libc_version: str,
        machine: str,
    ) -> None:
        wanted = [*BASE_PACKAGES, *bundle.details["instrumentations"]]
        target.progress(f"building the Python bundle ({len(wanted)} packages)")
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            f"{version[0]}.{version[1]}",
            "--abi",
            f"cp{version[0]}{version[1]}",
            *[
                arg
                for tag in _platforms(libc_name, libc_version, machine)
                for arg in ("--platform", tag)
            ],
            *_source_args(target.source),
        ]
        if tuple(sys.version_info[:2]) != version:
            argv.append("--no-compile")  # bytecode for this host's Python would be dead weight
        run_tool(
            [*argv, "--target", str(scratch), *wanted],
            "building the Python bundle with pip",
            hint="check that this host reaches PyPI, or pass --from with a wheelhouse "
            "directory (pip download --only-binary=:all: ... -d DIR)",
        )
        write_manifest(scratch, {"language": "python", "packages": wanted, **bundle.details})

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        loader = posixpath.join(bundle.target, "opentelemetry/instrumentation/auto_instrumentation")
        before = planner.env.get("PYTHONPATH")
        # sitecustomize first so it runs; the app's own path before the bundle's packages, so
        # the app keeps the versions of shared libraries (protobuf, requests) it was built with.
        middle = f":{before}" if before else ""
        planner.replace("PYTHONPATH", f"{loader}{middle}:{bundle.target}")


def _is_python(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith("python") and not name.endswith("-config")


def _platforms(libc_name: str, libc_version: str, machine: str) -> list[str]:
    """The wheel platform tags the container's libc accepts."""
    if libc_name == "musl":
        return [f"musllinux_1_{minor}_{machine}" for minor in (1, 2)]
    try:
        glibc_minor = int(libc_version.split(".")[1])
    except (IndexError, ValueError):
        glibc_minor = 17
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, max(glibc_minor, 17) + 1)]
    return [*tags, f"manylinux2014_{machine}"]


def _source_args(source: Path | None) -> list[str]:
    if source is None:
        return []
    if not source.is_dir():
        raise ContainerError(
            f"--from {source}: not a directory",
            hint="for Python, --from names a wheelhouse: a directory of .whl files",
        )
    return ["--no-index", "--find-links", str(source)]


def _bootstrap_table(target: Target) -> dict[str, Any]:
    """opentelemetry-instrumentation's table of libraries and their instrumentations (the one
    ``opentelemetry-bootstrap`` uses), read from its wheel and cached per release."""
    path = target.cache_dir / f"python-bootstrap-{CONTRIB_VERSION}.json"
    try:
        table: dict[str, Any] = json.loads(path.read_text())
        return table
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory() as scratch:
        run_tool(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                *_source_args(target.source),
                "-d",
                scratch,
                f"opentelemetry-instrumentation=={CONTRIB_VERSION}",
            ],
            "fetching opentelemetry-instrumentation's list of instrumentations",
            hint="check that this host reaches PyPI, or pass --from with a wheelhouse directory",
        )
        wheel = next(Path(scratch).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            source = archive.read("opentelemetry/instrumentation/bootstrap_gen.py").decode()
    table = _parse_bootstrap(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table))
    return table


def _parse_bootstrap(source: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return {"libraries": values["libraries"], "default": values["default_instrumentations"]}


def matching_instrumentations(table: dict[str, Any], installed: dict[str, str]) -> list[str]:
    """The default instrumentations plus those whose library the app has, in versions the
    instrumentation supports (what ``opentelemetry-bootstrap`` would pick inside the app)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    versions = {canonicalize_name(name): version for name, version in installed.items()}
    chosen = set(table["default"])
    for entry in table["libraries"]:
        try:
            requirement = Requirement(entry["library"])
            version = versions.get(canonicalize_name(requirement.name))
            if version is not None and requirement.specifier.contains(
                Version(version), prereleases=True
            ):
                chosen.add(entry["instrumentation"])
        except (InvalidRequirement, InvalidVersion):
            continue
    return sorted(chosen)
