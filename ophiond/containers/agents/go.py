"""Go: OpenTelemetry Go Automatic Instrumentation, which attaches eBPF uprobes to a running Go
binary from outside it. Nothing is injected into the application, which keeps running as it
is; the agent runs in a privileged sidecar container that shares the application's PID
namespace (so it sees the process and ``/proc/<pid>/exe``) and its network namespace (so the
exporter's ``127.0.0.1`` means what it means to the application).

The agent finds its target by comparing ``OTEL_GO_AUTO_TARGET_EXE`` with the link
``/proc/<pid>/exe`` of each process (see ``cli/process_poller.go`` upstream), so the path must
be absolute and free of symlinks. Its image comes from the project's registry, or ``--from``
names a local image.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ophiond.containers.agents import Bundle, Target, cache_key
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

VERSION = "v0.22.1"
IMAGE = f"ghcr.io/open-telemetry/opentelemetry-go-instrumentation/autoinstrumentation-go:{VERSION}"
TARGET_VARIABLE = "OTEL_GO_AUTO_TARGET_EXE"
_HINT = "pass --from with a local image (docker pull or docker load it first)"


class GoAgent:
    language = "go"
    # The orchestrator starts a sidecar (sidecar_config) instead of recreating the container.
    sidecar = True

    def __init__(self, image: str = IMAGE) -> None:
        self.image = image

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        executable = self._executable(target)
        # The command line keeps a --from that names no file as written: an image reference.
        reference = str(target.source) if target.source is not None else self.image
        state = "present"
        if not self._has_image(target.client, reference):
            if target.source is not None:
                raise ContainerError(
                    f"--from {reference}: the engine has no such image", hint=_HINT
                )
            state = "to be pulled"
            if not dry_run:
                target.progress(f"pulling {reference}")
                self._pull(target.client, reference)
                state = "pulled"
        return Bundle(
            "go",
            cache_key("go", reference),
            f"OpenTelemetry Go eBPF instrumentation ({reference}) in a privileged "
            f"sidecar, watching {executable}",
            image=reference,
            details={"executable": executable},
            state=state,
        )

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        """Nothing: the application is not recreated, so its environment cannot change. The
        common OTEL_* settings the planner holds go to the sidecar (see sidecar_config)."""

    def sidecar_config(
        self, target: Target, bundle: Bundle, env: list[str], name: str
    ) -> dict[str, Any]:
        """The body of ``POST /containers/create`` for the sidecar called ``name``."""
        app = target.container.id
        network = target.container.attrs.get("HostConfig", {}).get("NetworkMode")
        environment = list(env)
        if not any(item.startswith(f"{TARGET_VARIABLE}=") for item in environment):
            environment.append(f"{TARGET_VARIABLE}={bundle.details['executable']}")
        return {
            "Image": bundle.image,
            "Env": environment,
            "Labels": {},
            "HostConfig": {
                # bpf(2), perf events and reading another process's memory need it all.
                "Privileged": True,
                "PidMode": f"container:{app}",
                # A host-network app is reached on the host's loopback; any other shares its
                # namespace with the sidecar, so both see the same 127.0.0.1.
                "NetworkMode": "host" if network == "host" else f"container:{app}",
                "RestartPolicy": {"Name": "unless-stopped"},
                # uprobes fall back to tracefs under debugfs on kernels without the uprobe PMU.
                "Binds": ["/sys/kernel/debug:/sys/kernel/debug"],
            },
        }

    def _executable(self, target: Target) -> str:
        executable = target.detection.executable
        if not executable:
            raise ContainerError(
                "could not tell which program the container runs: the Go agent needs its path",
                hint="the process list (docker top) shows it while the container runs; start it",
            )
        if posixpath.basename(executable) == "go":
            raise ContainerError(
                "the container runs its program with `go run`, which builds it into a temporary "
                "file on every start",
                hint="build the program (go build) and run the binary",
            )
        if not executable.startswith("/"):
            raise ContainerError(
                f"the container runs {executable!r}, whose absolute path could not be found; "
                "the Go agent finds the process by it",
                hint="run the program by its absolute path (for example /app/server)",
            )
        return real_path(target.container, executable)

    @staticmethod
    def _has_image(client: Any, reference: str) -> bool:
        import docker.errors

        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as e:
            raise ContainerError(f"looking for the image {reference}: {e.explanation}") from e
        return True

    @staticmethod
    def _pull(client: Any, reference: str) -> None:
        import docker.errors
        import requests.exceptions

        try:
            client.images.pull(reference)
        except docker.errors.APIError as e:
            raise ContainerError(f"pulling {reference}: {e.explanation}", hint=_HINT) from e
        except requests.exceptions.RequestException as e:
            raise ContainerError(f"pulling {reference}: {e}", hint=_HINT) from e


def real_path(container: Any, path: str, hops: int = 8) -> str:
    """``path`` with its symlinks resolved inside the container (``/proc/<pid>/exe`` shows the
    resolved path), asked through the archive API, which needs no tool in the image."""
    import docker.errors

    for _ in range(hops):
        try:
            stream, stat = container.get_archive(path)
        except docker.errors.APIError:
            return path  # the agent may still match it; verification will tell
        for _chunk in stream:  # the archive must be read for the connection to be reused
            pass
        link = stat.get("linkTarget") or ""
        if not link:
            return path
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
    return path
