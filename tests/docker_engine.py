"""A real Docker engine for the tests, and images of two small apps to run on it (design.md §10).

The session starts its own ``dockerd`` (vfs storage, no bridge, no iptables) in a short directory
under /tmp, so nothing touches the machine's own Docker. No registry can be reached, so the app
images are root filesystems made from this host's Debian ``python3.11`` and ``node`` and handed to
``docker import``. Containers use host networking and listen on 127.0.0.1.

A test module gets the fixtures with ``pytest_plugins = ["docker_engine"]`` and the helpers with
``from docker_engine import run_app, wait_http, ...`` (tests/ is on sys.path, as for conftest).
That import runs before pytest loads the module as a plugin, too late for assertion rewriting,
so the module opts out (PYTEST_DONT_REWRITE, which also silences pytest's warning about it): it
raises AssertionError with its own messages instead of relying on rewritten asserts.

Environment, read when this module is imported (tests/conftest.py removes OPHION_* per test):

- ``OPHION_TEST_DOCKER_HOST``: use that engine (e.g. ``unix:///tmp/dk/docker.sock``) instead of
  starting one; teardown then removes only the containers the tests labelled, not the engine's own.
- ``OPHION_TEST_REQUIRE_DOCKER=1``: a missing ``dockerd`` fails the tests instead of skipping them
  (CI sets it, so the Docker tests can never pass by silently not running).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import pytest
import requests
from docker.models.containers import Container

logger = logging.getLogger(__name__)

EXTERNAL_DOCKER_HOST = os.environ.get("OPHION_TEST_DOCKER_HOST") or None
REQUIRE_DOCKER = os.environ.get("OPHION_TEST_REQUIRE_DOCKER") == "1"

# Every container run_app starts carries this label. The instrumenter copies labels when it
# recreates a container, so its replacements carry it too and the cleanup finds them all.
TEST_LABEL = "ophion.test"
PYTHON_APP_TAG = "ophion-test/python-app:1"
NODE_APP_TAG = "ophion-test/node-app:1"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class DockerEngine:
    """A Docker engine the tests may use freely: its address, a client, and a scratch directory."""

    host: str
    client: docker.DockerClient
    root: Path


def unavailable(reason: str) -> NoReturn:
    """Skip the Docker tests, or fail them when CI requires Docker (OPHION_TEST_REQUIRE_DOCKER=1)."""
    if REQUIRE_DOCKER:
        pytest.fail(f"{reason} (and OPHION_TEST_REQUIRE_DOCKER=1)", pytrace=False)
    pytest.skip(reason)


# --- the engine -------------------------------------------------------------------------------


def _connect(
    host: str, timeout: float, is_running: Callable[[], bool]
) -> tuple[docker.DockerClient, None] | tuple[None, str]:
    """A client for ``host`` once the engine answers a ping, or (None, why) after ``timeout`` s.

    (A reason, not an exception, so the test's failure does not show a chain of tracebacks.)
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline and is_running():
        try:
            # The client asks the engine for its API version when it is made, so it is made here.
            client = docker.DockerClient(base_url=host, timeout=120)
            client.ping()
            return client, None
        except (docker.errors.DockerException, requests.RequestException) as e:
            last_error = e
        time.sleep(0.2)
    state = "is still running" if is_running() else "has exited"
    return None, f"the engine at {host} {state} and did not answer: {last_error}"


def _mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = f"{root}/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_test_containers(client: docker.DockerClient, only_labelled: bool) -> None:
    """Force-remove the containers (with their anonymous volumes) the tests may have left."""
    filters = {"label": TEST_LABEL} if only_labelled else {}
    for container in client.containers.list(all=True, filters=filters):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass  # a restart policy or the instrumenter's own cleanup removed it meanwhile


@dataclass
class _Dockerd:
    """A dockerd process this session started, with its directory and log."""

    root: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (dockerd then stops its containerd), SIGKILL the group after STOP_TIMEOUT s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("dockerd did not stop in %ss; killing it", STOP_TIMEOUT)
                # dockerd leads its own process group (start_new_session), with its containerd.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def remove_root(self) -> None:
        """Unmount whatever dockerd left mounted below its root, then delete the directory."""
        for point in _mounts_under(self.root):
            logger.info("unmounting %s, which dockerd left mounted", point)
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.root)


def _start_dockerd(dockerd: str) -> _Dockerd:
    # Unix socket paths must stay under 108 bytes, and containerd's live below exec-root.
    root = Path(tempfile.mkdtemp(prefix="ophion-dk-", dir="/tmp"))
    command = [
        dockerd,
        "--storage-driver=vfs",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        f"--data-root={root}/data",
        f"--exec-root={root}/exec",
        f"--pidfile={root}/pid",
        "-H",
        f"unix://{root}/docker.sock",
    ]
    with open(root / "dockerd.log", "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _Dockerd(root, process)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A Docker engine for the whole session: our own dockerd, or OPHION_TEST_DOCKER_HOST's."""
    if EXTERNAL_DOCKER_HOST:
        root = Path(tempfile.mkdtemp(prefix="ophion-dk-", dir="/tmp"))
        try:
            client, error = _connect(EXTERNAL_DOCKER_HOST, START_TIMEOUT, lambda: True)
            if client is None:
                pytest.fail(f"OPHION_TEST_DOCKER_HOST: {error}", pytrace=False)
            try:
                yield DockerEngine(EXTERNAL_DOCKER_HOST, client, root)
            finally:
                try:
                    _remove_test_containers(client, only_labelled=True)
                finally:
                    client.close()
        finally:
            shutil.rmtree(root)
        return

    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")
    if dockerd is None:
        unavailable("dockerd not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        unavailable("dockerd needs root; run the Docker tests as root")
    daemon = _start_dockerd(dockerd)
    try:
        client, error = _connect(daemon.host, START_TIMEOUT, lambda: daemon.process.poll() is None)
        if client is None:
            pytest.fail(f"{error}\n--- dockerd log (tail) ---\n{daemon.log_tail()}", pytrace=False)
        try:
            yield DockerEngine(daemon.host, client, daemon.root)
        finally:
            try:
                _remove_test_containers(client, only_labelled=False)
            finally:
                client.close()
    finally:
        daemon.stop()
        daemon.remove_root()


@pytest.fixture
def clean_docker_engine(docker_engine: DockerEngine) -> Iterator[DockerEngine]:
    """The session's engine; the containers a test started (labelled) are removed after it."""
    yield docker_engine
    _remove_test_containers(docker_engine.client, only_labelled=True)


# --- root filesystems --------------------------------------------------------------------------


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


def import_rootfs(engine: DockerEngine, tar_path: Path, tag: str, changes: list[str]) -> str:
    """``docker import`` the tar as ``tag`` with Dockerfile ``changes``; the image id."""
    repository, version = tag.rsplit(":", 1)
    engine.client.api.import_image_from_file(
        str(tar_path), repository=repository, tag=version, changes=changes
    )
    image_id: str = engine.client.images.get(tag).id
    return image_id


# --- the Python app ----------------------------------------------------------------------------

PYTHON_APP = '''\
"""A small shop backend: Flask's own server on 127.0.0.1:$PORT."""

import logging
import os
import signal
import sys
import time

from flask import Flask

app = Flask(__name__)
log = logging.getLogger("shop")


@app.get("/")
def index():
    return "ok"


@app.get("/work")
def work():
    started = time.perf_counter()
    total = sum(i * i for i in range(20_000))
    log.warning("worked out total=%d", total)
    return {"total": total, "ms": round((time.perf_counter() - started) * 1000, 3)}


def stop(signum, frame):
    # As PID 1 the process gets no default SIGTERM action: exit so `docker stop` is quick and
    # atexit handlers (an SDK flushing its telemetry) run.
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)
'''

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
            unavailable(
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


def build_python_app_image(engine: DockerEngine, workdir: Path) -> str:
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
        rootfs.file("/app/app.py", PYTHON_APP)
    return import_rootfs(
        engine,
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

NODE_APP = """\
// A small shop frontend: node's own http module on 127.0.0.1:$PORT.
const http = require("http");

const server = http.createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  } else if (req.url === "/work") {
    let total = 0;
    for (let i = 0; i < 20000; i++) total += i * i;
    console.log(`worked out total=${total}`);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ total }));
  } else {
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found");
  }
});

server.listen(Number(process.env.PORT), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${process.env.PORT}`);
});

// As PID 1 node gets no default SIGTERM action: stop serving so `docker stop` is quick; an
// SDK's own SIGTERM handler may still flush, and the unref'd timer ends a process kept alive.
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
});
"""


def build_node_app_image(engine: DockerEngine, workdir: Path) -> str:
    """The http-module app on this host's node, with NODE_VERSION set like the official image."""
    node = shutil.which("node")
    if node is None:
        unavailable("node not installed, needed for the Node app image (apt-get install nodejs)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tar_path = workdir / "rootfs.tar"
    with RootfsTar(tar_path) as rootfs:
        rootfs.base_files()
        rootfs.host_path(node)
        rootfs.shared_libraries([os.path.realpath(node)])
        rootfs.file("/app/server.js", NODE_APP)
    return import_rootfs(
        engine,
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


def _build_image(
    engine: DockerEngine, build: Callable[[DockerEngine, Path], str], what: str
) -> str:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ophion-image-") as workdir:
        image_id = build(engine, Path(workdir))
    size = engine.client.images.get(image_id).attrs["Size"]
    logger.info(
        "built the %s image (%d MB) in %.1fs", what, size // 2**20, time.monotonic() - started
    )
    return image_id


@pytest.fixture(scope="session")
def python_app_image(docker_engine: DockerEngine) -> str:
    """Image id of the Flask app (tagged ophion-test/python-app:1); run it with PORT set."""
    return _build_image(docker_engine, build_python_app_image, "Python app")


@pytest.fixture(scope="session")
def node_app_image(docker_engine: DockerEngine) -> str:
    """Image id of the Node app (tagged ophion-test/node-app:1); run it with PORT set."""
    return _build_image(docker_engine, build_node_app_image, "Node app")


# --- running and reaching apps -----------------------------------------------------------------

# Tests talk to 127.0.0.1 only; a proxy from the environment must never carry that.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> str:
    """The body of a 200 answer to GET ``url``; OSError (URLError, HTTPError...) otherwise."""
    with _OPENER.open(url, timeout=5) as response:
        body: bytes = response.read()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return body.decode(errors="replace")


def wait_http(url: str, timeout: float = 30.0) -> str:
    """GET ``url`` until it answers 200; its body. AssertionError with the last error on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _get(url)
        except OSError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 in {timeout}s: {e!r}") from None
        time.sleep(0.1)


def run_app(
    engine: DockerEngine,
    image: str,
    name: str,
    port: int,
    *,
    environment: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    restart_policy: dict[str, Any] | None = None,
    volumes: dict[str, dict[str, str]] | list[str] | None = None,
    timeout: float = 30.0,
    **kwargs: Any,
) -> Container:
    """Run ``image`` detached on the host network with PORT set; return once ``/`` answers.

    ``volumes`` is the SDK's form: ``{"name-or-host-path": {"bind": "/in", "mode": "rw"}}``, or a
    list like ``["/data"]`` for anonymous volumes. Other keyword arguments go to
    ``containers.run``. Fails with the container's log if it exits or does not answer.
    """
    container: Container = engine.client.containers.run(
        image,
        name=name,
        detach=True,
        network_mode="host",
        environment={"PORT": str(port), **(environment or {})},
        labels={TEST_LABEL: "1", **(labels or {})},
        restart_policy=restart_policy or {"Name": "no"},
        volumes=volumes,
        **kwargs,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(url)
            return container
        except OSError as e:
            container.reload()
            if container.status not in ("created", "running", "restarting"):
                raise AssertionError(
                    f"container {name} is {container.status}:\n{container_log(container)}"
                ) from None
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"container {name} did not answer {url} in {timeout}s: {e!r}\n"
                    f"{container_log(container)}"
                ) from None
        time.sleep(0.1)


def container_log(container: Container, lines: int = 50) -> str:
    """The last ``lines`` of a container's stdout and stderr, for failure messages."""
    raw: bytes = container.logs(tail=lines)
    return raw.decode(errors="replace")


def wait_log(container: Container, text: str, timeout: float = 10.0) -> str:
    """Wait until ``text`` is in the container's log (it reaches the log driver a moment after
    the app wrote it); the log. AssertionError with the log's tail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        raw: bytes = container.logs()
        log = raw.decode(errors="replace")
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{text!r} not in the log of {container.name} in {timeout}s:\n{log[-3000:]}"
            )
        time.sleep(0.1)
