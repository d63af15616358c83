"""The Docker engine as ophion sees it (``ophion instrument`` now, auto-healing next): one connection, containers found by name,
their processes and files read without a shell, and Docker's errors turned into ours."""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ophiond.errors import ContainerError

# The Docker SDK is imported where it is used: ``ophion --help`` must not pay for it.


@contextmanager
def docker_errors(doing: str) -> Iterator[None]:
    """Turn an unexpected Docker API error into a :class:`ContainerError` naming the step."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as e:
        explanation = e.explanation if isinstance(e.explanation, str) else str(e)
        raise ContainerError(f"{doing}: Docker said: {explanation}") from e
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as e:
        raise ContainerError(f"{doing}: lost the Docker engine: {e}") from e


def connect() -> Any:
    """A client for the engine named by DOCKER_HOST (else the local socket), checked by a ping."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        raise _unreachable(e) from e
    return client


def _unreachable(error: Exception) -> ContainerError:
    text = str(error)
    if "Permission denied" in text or "PermissionError" in text:
        return ContainerError(
            "permission denied on the Docker socket",
            hint="add yourself to the docker group (sudo usermod -aG docker $USER, then log in "
            "again), or run the command with sudo",
        )
    return ContainerError(
        f"Docker is not reachable: {text}",
        hint="start the engine (sudo systemctl start docker), or point DOCKER_HOST at it",
    )


def find_container(client: Any, name: str) -> Any:
    """The container named (or with the id) ``name``; refused when it does not exist."""
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        raise ContainerError(
            f"no container named {name!r}",
            hint="docker ps lists the running containers and their names",
        ) from None
    except docker.errors.APIError as e:
        raise ContainerError(f"could not inspect {name!r}: {e.explanation}") from e


def require_running(container: Any) -> None:
    """Refuse a container that is not running: there is no process to look at nor to verify."""
    state = container.attrs["State"]
    if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
        status = state.get("Status", "stopped")
        raise ContainerError(
            f"container {container.name!r} is not running (it is {status})",
            hint=f"start it first: docker start {container.name}",
        )


def processes(container: Any) -> list[str] | None:
    """The command lines running in the container (``docker top``), or None if it cannot tell."""
    import docker.errors

    try:
        top = container.top()
    except docker.errors.APIError:
        return None
    titles = [str(t) for t in top.get("Titles") or []]
    column = titles.index("CMD") if "CMD" in titles else len(titles) - 1
    return [str(row[column]) for row in top.get("Processes") or [] if len(row) > column]


def read_file(container: Any, path: str, limit: int, hops: int = 8) -> bytes | None:
    """Up to ``limit`` bytes of a file inside the container (symlinks followed), None if absent.

    It goes through the archive API, so it needs no shell nor any tool inside the image."""
    import docker.errors

    for _ in range(hops):
        try:
            stream, stat = container.get_archive(path, chunk_size=1 << 20)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError:
            return None
        target = stat.get("linkTarget") or ""
        if not target:
            return _first_member(stream, limit)
        for _chunk in stream:  # drain the symlink's archive before asking for its target
            pass
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return None


def _first_member(stream: Iterator[bytes], limit: int) -> bytes | None:
    buffer = bytearray()
    for chunk in stream:
        if len(buffer) < limit + 4096:
            buffer.extend(chunk)
    with tarfile.open(fileobj=io.BytesIO(bytes(buffer)), mode="r|") as archive:
        for member in archive:
            if member.isfile():
                extracted = archive.extractfile(member)
                return extracted.read(limit) if extracted else None
            return None
    return None


def exec_json(container: Any, argv: Sequence[str], doing: str) -> Any:
    """Run ``argv`` in the container (no shell) and parse the JSON it prints on stdout."""
    import docker.errors

    try:
        code, (out, err) = container.exec_run(list(argv), demux=True)
    except docker.errors.APIError as e:
        raise ContainerError(f"{doing}: {e.explanation}") from e
    if code != 0:
        detail = (err or out or b"").decode(errors="replace").strip().splitlines()
        raise ContainerError(
            f"{doing}: {argv[0]} exited with {code}" + (f": {detail[-1]}" if detail else "")
        )
    try:
        return json.loads(out or b"")
    except ValueError as e:
        raise ContainerError(f"{doing}: {argv[0]} printed no JSON") from e


def last_log_lines(client: Any, container_id: str, lines: int = 20) -> list[str]:
    """The container's last log lines (stdout and stderr), for a failure report."""
    import docker.errors

    try:
        raw = client.api.logs(container_id, tail=lines, stdout=True, stderr=True)
    except docker.errors.APIError:
        return []
    return [line for line in raw.decode(errors="replace").splitlines() if line.strip()]
