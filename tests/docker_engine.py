"""A real Docker engine for the tests, images of two small apps, and helpers to run them (§10).

The session starts its own ``dockerd`` (vfs storage, no bridge, no iptables) in a short directory
under /tmp, so nothing touches the machine's own Docker. No registry can be reached, so the app
images are made by tests/docker_images.py from this host's python3 and node. Containers use host
networking and listen on 127.0.0.1.

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

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import pytest
import requests
from docker.models.containers import Container
from docker_images import MissingTool, build_node_app_image, build_python_app_image

logger = logging.getLogger(__name__)

EXTERNAL_DOCKER_HOST = os.environ.get("OPHION_TEST_DOCKER_HOST") or None
REQUIRE_DOCKER = os.environ.get("OPHION_TEST_REQUIRE_DOCKER") == "1"

# Every container run_app starts carries this label. The instrumenter copies labels when it
# recreates a container, so its replacements carry it too and the cleanup finds them all.
TEST_LABEL = "ophion.test"

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


# --- app images --------------------------------------------------------------------------------


def _build_image(
    engine: DockerEngine, build: Callable[[docker.DockerClient, Path], str], what: str
) -> str:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ophion-image-") as workdir:
        try:
            image_id = build(engine.client, Path(workdir))
        except MissingTool as e:
            unavailable(str(e))
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
