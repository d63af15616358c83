"""Images of two small apps for the Docker tests, made without a registry (design.md §10).

Each image is a root filesystem written straight into a tar and given to ``docker import``: this
host's Debian ``python3`` with Flask (tests/docker_apps/app.py), or this host's ``node`` with a
core-``http`` server (tests/docker_apps/server.js), plus the shared libraries ``ldd`` lists. No
shell, no package manager: what an instrumenter may rely on is what the official images also have
(the interpreter, /tmp, /etc/passwd), and what it must cope with is set on purpose in the image
config (an existing PYTHONPATH or NODE_OPTIONS, and no PYTHON_VERSION to read).

tests/docker_engine.py turns these into session fixtures.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import docker

APPS = Path(__file__).resolve().parent / "docker_apps"
PYTHON_APP_TAG = "ophion-test/python-app:1"
NODE_APP_TAG = "ophion-test/node-app:1"


class MissingTool(Exception):
    """This host lacks what an image is made of (a reason to skip, or to fail in CI)."""


class RootfsTar:
    """An uncompressed tar of a root filesystem, for ``docker import``, written entry by entry.

    Host files keep their paths, and every symlink met on the way (``/lib -> usr/lib`` on Debian's
    merged /usr, ``libz.so.1 -> libz.so.1.2.13``) is copied as a symlink with its target, so the
    dynamic loader inside finds things where it would on the host.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
        self._names: set[str] = set()

    def __enter__(self) -> RootfsTar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tar.close()

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None, source: str = "") -> None:
        if info.name in self._names:
            return
        parent = os.path.dirname(info.name)
        if parent:
            self.directory(parent)
        self._names.add(info.name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if data is not None:
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        elif info.isreg():
            with open(source, "rb") as f:
                self._tar.addfile(info, f)
        else:
            self._tar.addfile(info)

    def directory(self, name: str, mode: int = 0o755) -> None:
        """An empty directory (parents too) at ``name`` (absolute or relative to /)."""
        name = name.strip("/")
        if name and name not in self._names:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.mtime = int(time.time())
            self._add(info)

    def file(self, name: str, content: str | bytes, mode: int = 0o644) -> None:
        """A file made from ``content`` at ``name``."""
        info = tarfile.TarInfo(name.strip("/"))
        info.mode = mode
        info.mtime = int(time.time())
        self._add(info, content.encode() if isinstance(content, str) else content)

    def host_path(self, path: str) -> None:
        """The host's ``path`` at the same place, following (and copying) every symlink on it."""
        parts = os.path.normpath(path).strip("/").split("/")
        current = "/"
        for i, part in enumerate(parts):
            current = os.path.join(current, part)
            if os.path.islink(current):
                self._add(self._tar.gettarinfo(current, current.lstrip("/")), source=current)
                target = os.path.join(os.path.dirname(current), os.readlink(current))
                self.host_path(os.path.join(target, *parts[i + 1 :]))
                return
        if os.path.isdir(current):
            self.directory(current)
        else:
            self._add(self._tar.gettarinfo(current, current.lstrip("/")), source=current)

    def host_tree(self, top: str, exclude: Callable[[str], bool], at: str | None = None) -> None:
        """The host directory ``top`` (at ``at``, default the same path), minus excluded names."""
        at = (at or top).strip("/")
        in_place = at == top.strip("/")
        for dirpath, dirnames, filenames in os.walk(top):
            inside = os.path.relpath(dirpath, top)
            arcdir = at if inside == "." else f"{at}/{inside}"
            self.directory(arcdir)
            dirnames[:] = [d for d in dirnames if not exclude(d)]
            for name in [*dirnames, *filenames]:
                source = os.path.join(dirpath, name)
                if exclude(name) or not (os.path.islink(source) or os.path.isfile(source)):
                    continue
                if in_place and os.path.islink(source):
                    # Brings the target along when it lies elsewhere (Debian's sitecustomize.py
                    # links to /etc/python3.11/), so no link dangles inside.
                    self.host_path(source)
                else:
                    self._add(self._tar.gettarinfo(source, f"{arcdir}/{name}"), source=source)

    def shared_libraries(self, binaries: Iterable[str]) -> None:
        """Every library ``ldd`` lists for ``binaries``, and the dynamic loader."""
        for library in _ldd(binaries):
            self.host_path(library)

    def base_files(self) -> None:
        """What even a shell-free image needs: root in /etc/passwd and /etc/group, a /tmp."""
        self.file("etc/passwd", "root:x:0:0:root:/root:/bin/false\n")
        self.file("etc/group", "root:x:0:\n")
        self.file("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")
        self.directory("root", 0o700)
        self.directory("tmp", 0o1777)


def _ldd(binaries: Iterable[str]) -> set[str]:
    """The absolute paths of the shared libraries (and loader) ``ldd`` reports for ``binaries``."""
    result = subprocess.run(["ldd", *binaries], capture_output=True, text=True, check=False)
    libraries = set()
    for line in result.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            raise RuntimeError(f"ldd: {line}")
        if "=> /" in line:
            libraries.add(line.split("=> ", 1)[1].split(" (", 1)[0])
        elif line.startswith("/") and " (0x" in line:
            libraries.add(line.split(" (", 1)[0])
    return libraries


def import_rootfs(client: docker.DockerClient, tar_path: Path, tag: str, changes: list[str]) -> str:
    """``docker import`` the tar as ``tag`` with Dockerfile ``changes``; the image id."""
    repository, version = tag.rsplit(":", 1)
    client.api.import_image_from_file(
        str(tar_path), repository=repository, tag=version, changes=changes
    )
    image_id: str = client.images.get(tag).id
    return image_id


# --- the Python app ----------------------------------------------------------------------------

# Not part of the stdlib copy: tests, the GUI and IDE, the static libpython for C builds.
PYTHON_STDLIB_EXCLUDED = {
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "dist-packages",
    "site-packages",
}


def _python_stdlib_excluded(name: str) -> bool:
    return (
        name in PYTHON_STDLIB_EXCLUDED
        or name.startswith(("config-3", "_tkinter."))
        or name.endswith(".a")
    )


@dataclass(frozen=True)
class SystemPython:
    """Debian's /usr/bin/python3: the interpreter the Python app image is made of."""

    executable: str
    version: str
    stdlib: str

    @classmethod
    def find(cls) -> SystemPython:
        if not os.path.exists("/usr/bin/python3"):
            raise MissingTool(
                "no /usr/bin/python3 to build the Python app image (apt-get install python3)"
            )
        script = (
            "import json, os, sys, sysconfig; print(json.dumps([os.path.realpath(sys.executable),"
            " '%d.%d' % sys.version_info[:2], sysconfig.get_path('stdlib')]))"
        )
        out = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", script], capture_output=True, text=True, check=True
        ).stdout
        executable, version, stdlib = json.loads(out)
        return cls(executable, version, stdlib)


def _pip_install_target(target: Path, version: str, *requirements: str) -> None:
    """``pip install --target`` wheels built for CPython ``version`` on glibc x86-64/arm64."""
    machine = os.uname().machine
    abi = "cp" + version.replace(".", "")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--target", str(target), "--only-binary=:all:"),
            # The tests' Python may differ from the image's: ask for wheels for the image's.
            *("--python-version", version, "--implementation", "cp", "--abi", abi),
            *("--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}"),
            *requirements,
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def build_python_app_image(client: docker.DockerClient, workdir: Path) -> str:
    """The Flask app on Debian's python3 (no PYTHON_VERSION: detection must read the processes)."""
    python = SystemPython.find()
    vendor = workdir / "vendor"
    _pip_install_target(vendor, python.version, "flask>=3,<4")
    dynload = os.path.join(python.stdlib, "lib-dynload")
    extensions = [
        os.path.join(dynload, n)
        for n in sorted(os.listdir(dynload))
        if n.endswith(".so") and not _python_stdlib_excluded(n)
    ]
    tar_path = workdir / "rootfs.tar"
    with RootfsTar(tar_path) as rootfs:
        rootfs.base_files()
        # Both names, as on the host (python3 -> python3.11); the image runs python3.11.
        rootfs.host_path("/usr/bin/python3")
        rootfs.host_path(f"/usr/bin/python{python.version}")
        rootfs.shared_libraries([python.executable, *extensions])
        rootfs.host_tree(python.stdlib, _python_stdlib_excluded)
        rootfs.host_tree(str(vendor), lambda name: False, at="/app/vendor")
        rootfs.file("/app/app.py", (APPS / "app.py").read_bytes())
    return import_rootfs(
        client,
        tar_path,
        PYTHON_APP_TAG,
        [
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            # The instrumenter must extend an existing PYTHONPATH, not replace it.
            "ENV PYTHONPATH=/app/vendor",
            "ENV PYTHONUNBUFFERED=1",
            "WORKDIR /app",
            f'CMD ["python{python.version}", "/app/app.py"]',
        ],
    )


# --- the Node app ------------------------------------------------------------------------------


def build_node_app_image(client: docker.DockerClient, workdir: Path) -> str:
    """The http-module app on this host's node, with NODE_VERSION set like the official image."""
    node = shutil.which("node")
    if node is None:
        raise MissingTool(
            "node not installed, needed for the Node app image (apt-get install nodejs)"
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tar_path = workdir / "rootfs.tar"
    with RootfsTar(tar_path) as rootfs:
        rootfs.base_files()
        rootfs.host_path(node)
        rootfs.shared_libraries([os.path.realpath(node)])
        rootfs.file("/app/server.js", (APPS / "server.js").read_bytes())
    return import_rootfs(
        client,
        tar_path,
        NODE_APP_TAG,
        [
            f"ENV NODE_VERSION={version.removeprefix('v')}",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            # The instrumenter must extend an existing NODE_OPTIONS, not replace it.
            "ENV NODE_OPTIONS=--max-old-space-size=256",
            "WORKDIR /app",
            'CMD ["node", "/app/server.js"]',
        ],
    )
