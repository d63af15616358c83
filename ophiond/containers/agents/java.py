"""Java: the OpenTelemetry Java agent, one jar for every JVM (8 and newer) and libc, loaded with
``JAVA_TOOL_OPTIONS=-javaagent:...``, which every JVM reads at start.

The jar comes from the project's GitHub release, or from ``--from`` a local copy of it. It is
never attached to a running JVM: its maintainers do not support dynamic attach, so the container
is recreated and the agent loads at start like any ``-javaagent``.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

from ophiond.containers.agents import (
    Bundle,
    Target,
    cache_key,
    reuse_or_build,
    write_manifest,
)
from ophiond.containers.agents.fetch import download, sha256_file
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

# Changing it changes the bundle's cache key: containers move to the new agent only when they
# are instrumented again.
VERSION = "2.21.0"
RELEASES = "https://github.com/open-telemetry/opentelemetry-java-instrumentation/releases/download"
JAR = "javaagent.jar"
_HINT = (
    "check that this host reaches github.com, or download opentelemetry-javaagent.jar "
    "elsewhere and pass --from with its path"
)
# Options the JVM reads from the environment; an OpenTelemetry agent already named there would
# load twice and fight over the same classes.
_OPTION_VARIABLES = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS")
_OTEL_AGENT = re.compile(r"-javaagent:\S*opentelemetry\S*\.jar")


class JavaAgent:
    language = "java"

    def __init__(self, releases: str = RELEASES) -> None:
        self.releases = releases.rstrip("/")

    @property
    def url(self) -> str:
        return f"{self.releases}/v{VERSION}/opentelemetry-javaagent.jar"

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        for variable in _OPTION_VARIABLES:
            found = _OTEL_AGENT.search(target.env.get(variable, ""))
            if found:
                raise ContainerError(
                    f"the container already loads an OpenTelemetry Java agent ({variable} has "
                    f"{found[0]})",
                    hint=f"remove it from {variable} first, or keep that agent",
                )
        if target.source is not None:
            version = agent_version(target.source, f"--from {target.source}")
            key = cache_key("java", version or "local", sha256_file(target.source))
            description = f"OpenTelemetry Java agent {version or ''} from {target.source}"
        else:
            version = VERSION
            key = cache_key("java", VERSION)
            description = f"OpenTelemetry Java agent {VERSION}"
        bundle = Bundle(
            "java",
            key,
            " ".join(description.split()),
            target.cache_dir / key,
            details={"version": version},
        )

        def build(scratch: Path) -> None:
            jar = scratch / JAR
            if target.source is not None:
                shutil.copyfile(target.source, jar)
            else:
                download(self.url, jar, target.progress, _HINT)
                agent_version(jar, f"the jar downloaded from {self.url}")
            write_manifest(
                scratch,
                {"language": "java", "version": version, "sha256": sha256_file(jar)},
            )

        return reuse_or_build(target, bundle, dry_run, build)

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        # After the user's options: the JVM applies them in order, and theirs stay in force.
        planner.extend("JAVA_TOOL_OPTIONS", f"-javaagent:{bundle.target}/{JAR}", " ")


def agent_version(jar: Path, what: str) -> str | None:
    """The version of the Java agent in ``jar`` (its manifest's Implementation-Version, None when
    it has none); refused unless the jar is an agent, with a ``Premain-Class``."""
    try:
        with zipfile.ZipFile(jar) as archive:
            text = archive.read("META-INF/MANIFEST.MF").decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise ContainerError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise ContainerError(f"{what} is a directory", hint=_HINT) from None
    except (zipfile.BadZipFile, KeyError):
        raise ContainerError(f"{what} is not a jar (no META-INF/MANIFEST.MF)", hint=_HINT) from None
    except OSError as e:
        raise ContainerError(f"{what}: {e.strerror or e}") from None
    attributes = manifest_attributes(text)
    if "Premain-Class" not in attributes:
        raise ContainerError(
            f"{what} is a jar but not a Java agent (its manifest has no Premain-Class)",
            hint=_HINT,
        )
    return attributes.get("Implementation-Version")


def manifest_attributes(text: str) -> dict[str, str]:
    """The main section of a jar manifest (lines past 72 bytes continue after a leading space)."""
    attributes: dict[str, str] = {}
    name = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if attributes:
                break  # the end of the main section; per-entry sections follow
            continue
        if line.startswith(" ") and name:
            attributes[name] += line[1:]
        else:
            name, _, value = line.partition(":")
            attributes[name] = value.removeprefix(" ")
    return attributes
