"""Fetching agents' release files from their official locations, and reading archives safely.

A download lands in a temporary file next to its destination and is renamed only once every
byte the server announced has arrived, so an interrupted download never looks like a file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ophiond.errors import ContainerError

_CHUNK = 1 << 20
# Long enough for a slow mirror to start answering, short enough that a dead network fails
# within a minute instead of hanging the command.
TIMEOUT = 60.0


def download(
    url: str,
    dest: Path,
    progress: Callable[[str], None],
    hint: str,
    timeout: float = TIMEOUT,
) -> int:
    """Fetch ``url`` into ``dest`` (whole or not at all); the number of bytes written.

    ``hint`` tells the user what to do when the network fails (name ``--from``)."""
    request = urllib.request.Request(url, headers={"User-Agent": "ophion"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        raise ContainerError(
            f"downloading {url}: the server answered {e.code} {e.reason}", hint=hint
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ContainerError(f"downloading {url} failed: {reason}", hint=hint) from None
    with response:
        # urlopen follows redirects and raises for 4xx/5xx; anything else but 200 (a 204, a
        # 206 from a proxy) is still not the whole file.
        if response.status != 200:
            raise ContainerError(
                f"downloading {url}: the server answered {response.status} {response.reason}",
                hint=hint,
            )
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced and announced.isdigit() else None
        size = f" ({expected / 1e6:.1f} MB)" if expected is not None else ""
        progress(f"downloading {posixpath.basename(url)}{size}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            received = _copy(response, fd, url, dest, hint)
            if expected is not None and received != expected:
                raise ContainerError(
                    f"downloading {url} was cut short ({received} of {expected} bytes)",
                    hint=hint,
                )
            os.replace(partial, dest)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return received


def _copy(response: http.client.HTTPResponse, fd: int, url: str, dest: Path, hint: str) -> int:
    received = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (http.client.HTTPException, OSError) as e:
                raise ContainerError(f"downloading {url} failed: {e}", hint=hint) from None
            if not chunk:
                return received
            try:
                out.write(chunk)
            except OSError as e:
                raise ContainerError(f"writing {dest}: {e.strerror or e}") from None
            received += len(chunk)


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file (what names a bundle made from a local artifact)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def member_path(root: Path, name: str, archive: str) -> Path:
    """Where an archive member named ``name`` goes under ``root``; refused when the name would
    put it anywhere else (an absolute path, ``..``), as a malicious archive's would."""
    clean = posixpath.normpath(name.replace("\\", "/"))
    if clean.startswith("/") or clean == ".." or clean.startswith("../"):
        raise ContainerError(f"{archive} holds a file outside its own directory: {name!r}")
    return root / clean


def unpack_zip(archive: Path, dest: Path, what: str) -> None:
    """Unpack ``archive`` into ``dest``, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for member in members:
                member_path(dest, member.filename, what)  # all checked before any is written
            for member in members:
                zipped.extract(member, dest)
    except zipfile.BadZipFile as e:
        raise ContainerError(f"{what} is not a readable zip: {e}") from None
    except OSError as e:
        raise ContainerError(f"unpacking {what}: {e.strerror or e}") from None


def unpack_tar(stream: Any, dest: Path, what: str) -> None:
    """Unpack the archive API's tar of one directory into ``dest`` (its top directory dropped),
    refusing members that would land outside ``dest``."""
    with tempfile.TemporaryFile() as buffer:
        for chunk in stream:
            buffer.write(chunk)
        buffer.seek(0)
        root = dest.resolve()
        with tarfile.open(fileobj=buffer, mode="r:") as tar:
            for member in tar:
                relative = member.name.partition("/")[2]
                if not relative:
                    continue
                path = member_path(dest, relative, what)
                # Links already unpacked could lead a name that looks inside to outside.
                if not path.parent.resolve().is_relative_to(root) or path.is_symlink():
                    raise ContainerError(f"{what} holds a file behind a link: {member.name!r}")
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    assert source is not None
                    with source, path.open("wb") as out:
                        shutil.copyfileobj(source, out)
                    path.chmod(0o755 if member.mode & 0o111 else 0o644)
                elif member.issym():
                    # vendor/bin links point into vendor; one pointing elsewhere is refused.
                    link = posixpath.join(posixpath.dirname(relative), member.linkname)
                    member_path(dest, link, what)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(member.linkname, path)
