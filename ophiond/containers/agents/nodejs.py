"""Node.js: ``@opentelemetry/auto-instrumentations-node`` installed with npm on the host and
loaded with ``NODE_OPTIONS=--require .../register.js`` (pure JavaScript: one bundle serves every
Node version and libc the package supports)."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

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

PACKAGE = "@opentelemetry/auto-instrumentations-node"
VERSION = "0.81.2"
REGISTER = f"node_modules/{PACKAGE}/build/src/register.js"
# The package's "engines": ^18.19.0 || >=20.6.0.
_SUPPORTED = "Node.js 18.19 or newer within 18, or 20.6 and newer"
# Cloud detectors ask metadata servers over the network at every start; on one host these
# say what is useful without leaving it.
_DETECTORS = "env,host,os,process,serviceinstance,container"


class NodeAgent:
    language = "nodejs"

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        version = target.detection.version or self._version(target)
        if not supported(version):
            raise ContainerError(
                f"the container runs Node.js {version}; {PACKAGE} {VERSION} needs {_SUPPORTED}"
            )
        key = cache_key("nodejs", VERSION)
        bundle = Bundle(
            "nodejs",
            key,
            f"{PACKAGE} {VERSION} (for Node.js {version})",
            target.cache_dir / key,
            details={"node": version},
        )
        return reuse_or_build(target, bundle, dry_run, lambda scratch: self._build(target, scratch))

    def _version(self, target: Target) -> str:
        executable = target.detection.executable
        node = (
            executable
            if executable and posixpath.basename(executable) in ("node", "nodejs")
            else "node"
        )
        found = exec_json(
            target.container,
            [node, "-e", "console.log(JSON.stringify(process.versions.node))"],
            "asking the container's Node.js for its version",
        )
        return str(found)

    def _build(self, target: Target, scratch: Path) -> None:
        target.progress(f"building the Node.js bundle ({PACKAGE} {VERSION}) with npm")
        packages = [f"{PACKAGE}@{VERSION}"]
        offline: list[str] = []
        if target.source is not None:
            tarballs = sorted(target.source.glob("*.tgz")) if target.source.is_dir() else []
            if not tarballs:
                raise ContainerError(
                    f"--from {target.source}: no .tgz files there",
                    hint="for Node.js, --from names a directory of npm tarballs "
                    f"(npm pack {PACKAGE}@{VERSION} and each of its dependencies)",
                )
            packages = [str(path) for path in tarballs]
            offline = ["--offline"]
        (scratch / "package.json").write_text('{"name": "ophion-otel-bundle", "private": true}\n')
        run_tool(
            [
                "npm",
                "install",
                "--prefix",
                str(scratch),
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--no-package-lock",
                "--loglevel=error",
                *offline,
                *packages,
            ],
            "building the Node.js bundle with npm",
            hint="install npm on this host and check that it reaches the npm registry, or "
            "pass --from with a directory of npm tarballs",
        )
        if not Path(scratch, REGISTER).is_file():
            raise ContainerError(f"the npm install has no {REGISTER}: not {PACKAGE}?")
        write_manifest(scratch, {"language": "nodejs", "package": PACKAGE, "version": VERSION})

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        planner.extend("NODE_OPTIONS", f"--require {posixpath.join(bundle.target, REGISTER)}", " ")
        planner.default("OTEL_NODE_RESOURCE_DETECTORS", _DETECTORS)


def supported(version: str) -> bool:
    """Does the package's ``engines`` range admit this Node.js version?"""
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if not match:
        return False
    major, minor = int(match[1]), int(match[2])
    return (major == 18 and minor >= 19) or (major == 20 and minor >= 6) or major > 20
