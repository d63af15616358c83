"""The OpenTelemetry agent of each language: how its bundle is prepared and how it is injected.

A bundle is prepared on the host (the registry may be out of the container's reach), cached and
versioned under ``<data dir>/instrumentation/<key>/``, and reaches the container through a
named volume, mounted read-only at ``/otel-auto-instrumentation-<language>`` as the
OpenTelemetry Operator does. Go is the exception: its eBPF agent runs beside the application
in a sidecar container and nothing is mounted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ophiond.containers.detect import Detection
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

# Written last into a bundle's directory: a directory without it is an interrupted build.
MANIFEST = "ophion-bundle.json"


@dataclass(frozen=True)
class Target:
    """The container being instrumented, as the agents need to see it."""

    client: Any
    container: Any  # docker.models.containers.Container
    detection: Detection
    env: Mapping[str, str]
    arch: str  # as Docker names it: amd64, arm64
    cache_dir: Path
    source: Path | None  # --from: local artifacts instead of the official release locations
    progress: Callable[[str], None] = lambda _message: None


@dataclass(frozen=True)
class Bundle:
    """Files prepared on the host for one kind of container, or (Go) the sidecar's image."""

    language: str
    key: str
    description: str
    path: Path | None = None
    image: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # What preparing it took: "cached", "built", "to be built" (a dry run); for an image
    # "present", "pulled", "to be pulled".
    # (Not part of what the bundle is: two preparations of the same bundle compare equal.)
    state: str = field(default="cached", compare=False)

    @property
    def volume(self) -> str:
        return f"ophion-otel-{self.key}"

    @property
    def target(self) -> str:
        return f"/otel-auto-instrumentation-{self.language}"


class Agent(Protocol):
    """One language's injection mechanism."""

    language: str

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        """The bundle for this container: reused from the cache, else built (not when dry)."""
        ...

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        """Add this language's variables (after the common OpenTelemetry ones)."""
        ...


def agent_for(language: str) -> Agent:
    """The agent that instruments ``language`` (one of detect.LANGUAGES)."""
    import importlib

    module_name, class_name = _AGENTS[language]
    module = importlib.import_module(f"ophiond.containers.agents.{module_name}")
    agent: Agent = getattr(module, class_name)()
    return agent


_AGENTS = {
    "python": ("python", "PythonAgent"),
    "nodejs": ("nodejs", "NodeAgent"),
    "java": ("java", "JavaAgent"),
    "dotnet": ("dotnet", "DotnetAgent"),
    "go": ("go", "GoAgent"),
    "php": ("php", "PhpAgent"),
}


def cache_key(language: str, *parts: Any) -> str:
    """A readable, versioned key: ``<language>-<first part>-<hash of everything>``."""
    digest = hashlib.sha256(json.dumps([language, *parts], sort_keys=True).encode()).hexdigest()
    return f"{language}-{parts[0]}-{digest[:10]}" if parts else f"{language}-{digest[:10]}"


def reuse_or_build(
    target: Target, bundle: Bundle, dry_run: bool, build: Callable[[Path], None]
) -> Bundle:
    """The bundle from the cache, else built by ``build`` into a scratch directory that becomes
    the cache entry (not in a dry run); its ``state`` says which. ``build`` writes the manifest
    last."""
    if cached(target.cache_dir, bundle.key) is not None:
        return dataclasses.replace(bundle, state="cached")
    if dry_run:
        return dataclasses.replace(bundle, state="to be built")
    with building(target.cache_dir, bundle.key) as scratch:
        build(scratch)
    return dataclasses.replace(bundle, state="built")


def cached(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The manifest of a complete bundle in the cache, None when there is none."""
    try:
        manifest: dict[str, Any] = json.loads((cache_dir / key / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest


@contextmanager
def building(cache_dir: Path, key: str) -> Iterator[Path]:
    """A scratch directory that becomes ``cache_dir/key`` only when the build succeeds, so an
    interrupted build never leaves a bundle that looks complete."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        yield scratch
        final = cache_dir / key
        if final.exists():
            shutil.rmtree(final)
        scratch.rename(final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def run_tool(
    argv: Sequence[str], doing: str, hint: str, env: Mapping[str, str] | None = None
) -> str:
    """Run a host tool (pip, npm) for a bundle; its error output becomes the failure's reason."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except FileNotFoundError:
        raise ContainerError(
            f"{doing}: {argv[0]} is not installed on this host", hint=hint
        ) from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "ERROR" in line or "ERR!" in line), None)
        raise ContainerError(
            f"{doing} failed: {reason or (lines[-1] if lines else f'exit {done.returncode}')}",
            hint=hint,
        )
    return done.stdout
