"""A bundle's named volume: filled once from the host's cache, then mounted read-only.

The files are copied through the engine's archive API into a container that is created (never
started) from the application's own image with the volume mounted: that works with a remote
engine or Docker Desktop, where a host path means nothing to the daemon, and needs no image
besides the one the application already has.
"""

from __future__ import annotations

import posixpath
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ophiond.containers.agents import MANIFEST, Bundle
from ophiond.containers.engine import docker_errors, read_file

LABEL = "io.ophion.bundle"


def ensure_volume(client: Any, bundle: Bundle, image: str, progress: Callable[[str], None]) -> None:
    """Make sure the volume holds the bundle, copying it there when it does not yet."""
    assert bundle.path is not None
    with docker_errors(f"creating the volume {bundle.volume}"):
        client.api.create_volume(bundle.volume, labels={LABEL: bundle.key})
        helper = client.api.create_container(
            image,
            command=["true"],
            entrypoint=[],
            network_disabled=True,
            labels={LABEL: bundle.key},
            host_config=client.api.create_host_config(binds=[f"{bundle.volume}:{bundle.target}"]),
        )["Id"]
    try:
        container = client.containers.get(helper)
        if read_file(container, posixpath.join(bundle.target, MANIFEST), 1 << 16) is not None:
            return
        progress(f"copying the bundle into the volume {bundle.volume}")
        with tempfile.TemporaryFile() as archive:
            _pack(bundle.path, archive)
            archive.seek(0)
            with docker_errors(f"copying the bundle into {bundle.volume}"):
                client.api.put_archive(helper, bundle.target, archive)
    finally:
        with docker_errors("removing the helper container"):
            client.api.remove_container(helper, force=True)


def _pack(directory: Path, archive: Any) -> None:
    """A tar of the bundle, readable by any user in the container, its manifest written last so
    that a copy cut short is not taken for a complete one."""

    def readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode |= 0o555 if info.isdir() or info.mode & 0o111 else 0o444
        return info

    with tarfile.open(fileobj=archive, mode="w") as tar:
        for entry in sorted(directory.iterdir()):
            if entry.name != MANIFEST:
                tar.add(entry, arcname=entry.name, filter=readable)
        tar.add(directory / MANIFEST, arcname=MANIFEST, filter=readable)


def mount(bundle: Bundle) -> dict[str, Any]:
    """The read-only mount of the bundle's volume, as ``HostConfig.Mounts`` lists it."""
    return {"Type": "volume", "Source": bundle.volume, "Target": bundle.target, "ReadOnly": True}
