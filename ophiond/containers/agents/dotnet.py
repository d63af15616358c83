""".NET: OpenTelemetry .NET Automatic Instrumentation, a CLR profiler (native, one build per libc
and machine) plus a startup hook and the managed assemblies it loads, switched on by the
``CORECLR_*`` and ``DOTNET_*`` variables its own ``instrument.sh`` sets.

The release zip for the container's libc and machine comes from the project's GitHub release,
or from ``--from`` a local copy of it; it is unpacked as it is, so the bundle is the
``OTEL_DOTNET_AUTO_HOME`` the project documents.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

from ophiond.containers.agents import (
    Bundle,
    Target,
    cache_key,
    reuse_or_build,
    write_manifest,
)
from ophiond.containers.agents.fetch import download, sha256_file, unpack_zip
from ophiond.containers.detect import libc
from ophiond.containers.engine import read_file
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

VERSION = "1.13.0"
RELEASES = (
    "https://github.com/open-telemetry/opentelemetry-dotnet-instrumentation/releases/download"
)
PROFILER_ID = "{918728DD-259F-4A6A-AC2B-B85E1B658318}"
NATIVE = "OpenTelemetry.AutoInstrumentation.Native.so"
STARTUP_HOOK = "net/OpenTelemetry.AutoInstrumentation.StartupHook.dll"
# Docker's names for the machines the project builds for, and the project's names for them.
_MACHINES = {"amd64": "x64", "arm64": "arm64"}
# The CLR loads a single profiler: with one of these set, another is attached (or profiling
# was switched off on purpose), and ours would either not load or push the other one out.
_PROFILER_VARIABLES = (
    "CORECLR_ENABLE_PROFILING",
    "CORECLR_PROFILER",
    "CORECLR_PROFILER_PATH",
    "CORECLR_PROFILER_PATH_64",
    "CORECLR_PROFILER_PATH_ARM64",
)


class DotnetAgent:
    language = "dotnet"

    def __init__(self, releases: str = RELEASES) -> None:
        self.releases = releases.rstrip("/")

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        refuse_other_instrumentation(target.env)
        machine = _MACHINES.get(target.arch.split("/")[0])
        if machine is None:
            raise ContainerError(
                f"the container's machine is {target.arch}; OpenTelemetry .NET Automatic "
                "Instrumentation is built for amd64 and arm64 only"
            )
        libc_name = libc(lambda path, limit: read_file(target.container, path, limit), target.arch)
        asset = f"opentelemetry-dotnet-instrumentation-linux-{libc_name}-{machine}.zip"
        # The release's own names: linux-x64, linux-musl-x64, linux-arm64, linux-musl-arm64.
        native_dir = f"linux-musl-{machine}" if libc_name == "musl" else f"linux-{machine}"
        if target.source is not None:
            if not zipfile.is_zipfile(target.source):
                raise ContainerError(
                    f"--from {target.source}: not a zip file",
                    hint=f"for .NET, --from names the release's {asset}",
                )
            origin = f"from {target.source}"
            key = cache_key("dotnet", "local", libc_name, machine, sha256_file(target.source))
        else:
            origin = VERSION
            key = cache_key("dotnet", VERSION, libc_name, machine)
        bundle = Bundle(
            "dotnet",
            key,
            f"OpenTelemetry .NET Automatic Instrumentation {origin} ({libc_name}, {machine})",
            target.cache_dir / key,
            details={"libc": libc_name, "machine": machine, "native_dir": native_dir},
        )

        def build(scratch: Path) -> None:
            if target.source is not None:
                unpack_zip(target.source, scratch, f"--from {target.source}")
                what = f"--from {target.source}"
            else:
                url = f"{self.releases}/v{VERSION}/{asset}"
                archive = scratch / f".{asset}"
                download(
                    url,
                    archive,
                    target.progress,
                    hint=f"check that this host reaches github.com, or download {asset} "
                    "elsewhere and pass --from with its path",
                )
                unpack_zip(archive, scratch, url)
                archive.unlink()
                what = url
            for needed in (f"{native_dir}/{NATIVE}", STARTUP_HOOK):
                if not (scratch / needed).is_file():
                    raise ContainerError(
                        f"{what} has no {needed}: it is not {asset} (the container runs "
                        f"{libc_name} on {machine})",
                        hint=f"for .NET, --from names the release's {asset}",
                    )
            write_manifest(scratch, {"language": "dotnet", "origin": origin, **bundle.details})

        return reuse_or_build(target, bundle, dry_run, build)

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        home = bundle.target
        planner.default("CORECLR_ENABLE_PROFILING", "1")
        planner.default("CORECLR_PROFILER", PROFILER_ID)
        planner.default("CORECLR_PROFILER_PATH", f"{home}/{bundle.details['native_dir']}/{NATIVE}")
        # Before the user's entries, as the project's instrument.sh puts them: the startup hook
        # and its assemblies must win over older copies an app may carry.
        planner.extend("DOTNET_STARTUP_HOOKS", f"{home}/{STARTUP_HOOK}", ":", first=True)
        planner.extend("DOTNET_ADDITIONAL_DEPS", f"{home}/AdditionalDeps", ":", first=True)
        planner.extend("DOTNET_SHARED_STORE", f"{home}/store", ":", first=True)
        planner.default("OTEL_DOTNET_AUTO_HOME", home)


def refuse_other_instrumentation(env: Mapping[str, str]) -> None:
    """Refuse a container that is already instrumented by other means, or has a profiler."""
    if "OTEL_DOTNET_AUTO_HOME" in env:
        raise ContainerError(
            "the container is already instrumented by OpenTelemetry .NET Automatic "
            f"Instrumentation (OTEL_DOTNET_AUTO_HOME={env['OTEL_DOTNET_AUTO_HOME']})",
            hint="keep that instrumentation, or remove its variables from the container first",
        )
    for variable in _PROFILER_VARIABLES:
        if variable in env:
            raise ContainerError(
                f"the container sets {variable}={env[variable]}: another CLR profiler is "
                "configured, and .NET loads only one",
                hint="remove the other profiler's CORECLR_* variables first",
            )
