"""The Java, .NET, Go and PHP agents up to their downloads, without Docker or the internet.

Release files are artifacts the tests build (a jar with an agent's manifest, zips laid out like
the .NET release), served by a local HTTP server standing in for GitHub; the container is a
stand-in that answers the few calls the agents make (inspect, files through the archive API,
exec), and the PHP helper container is simulated by a stand-in client.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from ophion_cli.commands.instrument import _local
from ophiond.containers.agents import Bundle, Target
from ophiond.containers.agents.dotnet import DotnetAgent
from ophiond.containers.agents.fetch import download
from ophiond.containers.agents.go import IMAGE, GoAgent
from ophiond.containers.agents.java import JavaAgent
from ophiond.containers.agents.php import PhpAgent
from ophiond.containers.detect import Detection
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

SETTINGS = Settings("shop", "http://127.0.0.1:4318", "0123456789abcdef")
APP_ID = "a" * 64
IMAGE_ID = "sha256:" + "b" * 64
MUSL_LOADERS = {"amd64": "/lib/ld-musl-x86_64.so.1", "arm64": "/lib/ld-musl-aarch64.so.1"}


class FakeContainer:
    """What the agents ask of a container: its inspect, its files, and exec."""

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        links: dict[str, str] | None = None,
        exec_output: Any = None,
        network: str = "bridge",
    ) -> None:
        self.id = APP_ID
        self.attrs = {"Id": APP_ID, "Image": IMAGE_ID, "HostConfig": {"NetworkMode": network}}
        self.files = files or {}
        self.links = links or {}
        self.exec_output = exec_output
        self.execs: list[list[str]] = []

    def get_archive(self, path: str, chunk_size: int = 0) -> tuple[Iterator[bytes], dict[str, Any]]:
        if path in self.links:
            return iter([b""]), {"name": path, "linkTarget": self.links[path]}
        if path not in self.files:
            raise docker.errors.NotFound(f"no {path}")
        return iter([tar_of({path.rsplit("/", 1)[1]: self.files[path]})]), {"name": path}

    def exec_run(self, argv: list[str], demux: bool = False) -> tuple[int, tuple[bytes, None]]:
        self.execs.append(argv)
        return 0, (json.dumps(self.exec_output).encode(), None)


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_target(
    tmp_path: Path,
    container: FakeContainer | None = None,
    env: dict[str, str] | None = None,
    source: Path | None = None,
    executable: str | None = None,
    arch: str = "amd64",
    client: Any = None,
    version: str | None = None,
) -> Target:
    return Target(
        client=client,
        container=container or FakeContainer(),
        detection=Detection("x", ("test",), version=version, executable=executable),
        env=env or {},
        arch=arch,
        cache_dir=tmp_path / "cache",
        source=source,
    )


def env_after(agent: Any, bundle: Bundle, env: dict[str, str]) -> dict[str, str | None]:
    planner = EnvPlanner(env)
    agent.environment(planner, bundle, SETTINGS)
    return {change.name: change.after for change in planner.changes}


@dataclass
class Server:
    """A stand-in for a release host on 127.0.0.1: serves ``files`` and counts requests."""

    base: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    short_by: int = 0  # announce this many bytes more than are sent, then hang up


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server("", {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + state.short_by))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}/releases"
    yield state
    httpd.shutdown()
    httpd.server_close()


# --- Java -------------------------------------------------------------------------------------


def make_jar(path: Path, premain: bool = True, version: str = "2.21.0") -> Path:
    lines = ["Manifest-Version: 1.0", f"Implementation-Version: {version}"]
    if premain:
        lines.append("Premain-Class: io.opentelemetry.javaagent.OpenTelemetryAgent")
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "\r\n".join(lines) + "\r\n\r\n")
        jar.writestr("io/opentelemetry/javaagent/OpenTelemetryAgent.class", b"\xca\xfe\xba\xbe")
    return path


def test_java_from_a_local_jar_loads_it_after_the_users_options(tmp_path: Path) -> None:
    jar = make_jar(tmp_path / "opentelemetry-javaagent.jar")
    bundle = JavaAgent().prepare(make_target(tmp_path, source=jar), dry_run=False)

    assert bundle.path is not None
    assert (bundle.path / "javaagent.jar").read_bytes() == jar.read_bytes()
    assert bundle.key.startswith("java-2.21.0-")
    assert "2.21.0" in bundle.description
    agent = "-javaagent:/otel-auto-instrumentation-java/javaagent.jar"
    user = {"JAVA_TOOL_OPTIONS": "-Xmx512m -Dfile.encoding=UTF-8"}
    assert env_after(JavaAgent(), bundle, user) == {
        "JAVA_TOOL_OPTIONS": f"-Xmx512m -Dfile.encoding=UTF-8 {agent}"
    }
    assert env_after(JavaAgent(), bundle, {}) == {"JAVA_TOOL_OPTIONS": agent}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not a zip") and p, "is not a jar"),
        (lambda p: make_jar(p, premain=False), "not a Java agent"),
    ],
)
def test_java_refuses_a_file_that_is_not_an_agent(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "agent.jar"
    make(path)
    with pytest.raises(ContainerError, match=message):
        JavaAgent().prepare(make_target(tmp_path, source=path), dry_run=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_java_refuses_a_container_that_already_loads_an_opentelemetry_agent(
    tmp_path: Path,
) -> None:
    env = {"JAVA_TOOL_OPTIONS": "-javaagent:/otel/opentelemetry-javaagent.jar"}
    with pytest.raises(ContainerError, match="already loads an OpenTelemetry Java agent"):
        JavaAgent().prepare(make_target(tmp_path, env=env), dry_run=True)


def test_java_downloads_the_pinned_release_once(tmp_path: Path, server: Server) -> None:
    jar = make_jar(tmp_path / "served.jar").read_bytes()
    server.files["/releases/v2.21.0/opentelemetry-javaagent.jar"] = jar
    agent = JavaAgent(releases=server.base)
    messages: list[str] = []
    target = make_target(tmp_path)
    target = dataclasses.replace(target, progress=messages.append)

    dry = agent.prepare(target, dry_run=True)
    assert server.requests == [] and dry.path is not None and not dry.path.exists()

    first = agent.prepare(target, dry_run=False)
    second = agent.prepare(target, dry_run=False)
    assert server.requests == ["/releases/v2.21.0/opentelemetry-javaagent.jar"]
    assert first == second and first.key == dry.key
    assert first.path is not None and (first.path / "javaagent.jar").read_bytes() == jar
    assert any("downloading opentelemetry-javaagent.jar" in m for m in messages)


def test_a_download_that_fails_leaves_no_file_and_names_from(
    tmp_path: Path, server: Server
) -> None:
    dest = tmp_path / "dl" / "agent.jar"
    with pytest.raises(ContainerError, match="404") as missing:
        download(f"{server.base}/nothing.jar", dest, lambda _m: None, hint="or pass --from")
    assert "--from" in (missing.value.hint or "")

    server.files["/releases/cut.jar"] = b"x" * 1000
    server.short_by = 500
    with pytest.raises(ContainerError, match="cut short|failed"):
        download(f"{server.base}/cut.jar", dest, lambda _m: None, hint="or pass --from")
    assert list(dest.parent.iterdir()) == []  # neither the file nor a partial one

    with pytest.raises(ContainerError, match="failed") as refused:
        download("http://127.0.0.1:9/agent.jar", dest, lambda _m: None, hint="or pass --from")
    assert "--from" in (refused.value.hint or "")


# --- .NET -------------------------------------------------------------------------------------


def make_dotnet_zip(path: Path, native_dir: str, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{native_dir}/OpenTelemetry.AutoInstrumentation.Native.so", b"\x7fELF")
        archive.writestr("net/OpenTelemetry.AutoInstrumentation.StartupHook.dll", b"MZ")
        archive.writestr("AdditionalDeps/shared/Microsoft.NETCore.App/8.0.0/x.deps.json", b"{}")
        archive.writestr("store/x64/net8.0/some.dll", b"MZ")
        archive.writestr("instrument.sh", b"#!/bin/sh\n")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def dotnet_container(arch: str, musl: bool) -> FakeContainer:
    return FakeContainer(files={MUSL_LOADERS[arch]: b"\x7fELF"} if musl else {})


@pytest.mark.parametrize(
    ("arch", "musl", "native_dir"),
    [
        ("amd64", False, "linux-x64"),
        ("amd64", True, "linux-musl-x64"),
        ("arm64", False, "linux-arm64"),
        ("arm64", True, "linux-musl-arm64"),
    ],
)
def test_dotnet_from_a_local_zip_sets_the_profiler_for_the_containers_libc(
    tmp_path: Path, arch: str, musl: bool, native_dir: str
) -> None:
    archive = make_dotnet_zip(tmp_path / "otel.zip", native_dir)
    target = make_target(tmp_path, dotnet_container(arch, musl), source=archive, arch=arch)
    bundle = DotnetAgent().prepare(target, dry_run=False)

    assert bundle.path is not None
    assert (bundle.path / native_dir / "OpenTelemetry.AutoInstrumentation.Native.so").is_file()
    home = "/otel-auto-instrumentation-dotnet"
    assert env_after(DotnetAgent(), bundle, {}) == {
        "CORECLR_ENABLE_PROFILING": "1",
        "CORECLR_PROFILER": "{918728DD-259F-4A6A-AC2B-B85E1B658318}",
        "CORECLR_PROFILER_PATH": f"{home}/{native_dir}/OpenTelemetry.AutoInstrumentation.Native.so",
        "DOTNET_STARTUP_HOOKS": f"{home}/net/OpenTelemetry.AutoInstrumentation.StartupHook.dll",
        "DOTNET_ADDITIONAL_DEPS": f"{home}/AdditionalDeps",
        "DOTNET_SHARED_STORE": f"{home}/store",
        "OTEL_DOTNET_AUTO_HOME": home,
    }


def test_dotnet_keeps_the_users_startup_hooks_after_its_own(tmp_path: Path) -> None:
    archive = make_dotnet_zip(tmp_path / "otel.zip", "linux-x64")
    bundle = DotnetAgent().prepare(make_target(tmp_path, source=archive), dry_run=False)
    env = env_after(DotnetAgent(), bundle, {"DOTNET_STARTUP_HOOKS": "/app/MyHook.dll"})
    assert env["DOTNET_STARTUP_HOOKS"] == (
        "/otel-auto-instrumentation-dotnet/net/OpenTelemetry.AutoInstrumentation.StartupHook.dll"
        ":/app/MyHook.dll"
    )


def test_dotnet_refuses_a_zip_for_another_libc(tmp_path: Path) -> None:
    archive = make_dotnet_zip(tmp_path / "glibc.zip", "linux-x64")
    target = make_target(tmp_path, dotnet_container("amd64", musl=True), source=archive)
    with pytest.raises(ContainerError, match="linux-musl-x64") as refused:
        DotnetAgent().prepare(target, dry_run=False)
    assert "opentelemetry-dotnet-instrumentation-linux-musl-x64.zip" in str(refused.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_dotnet_refuses_a_zip_that_writes_outside_the_bundle(tmp_path: Path) -> None:
    archive = make_dotnet_zip(tmp_path / "evil.zip", "linux-x64", {"../../escaped.txt": b"x"})
    with pytest.raises(ContainerError, match="outside"):
        DotnetAgent().prepare(make_target(tmp_path, source=archive), dry_run=False)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_DOTNET_AUTO_HOME": "/otel-dotnet-auto"}, "already instrumented"),
        ({"CORECLR_PROFILER": "{ABCD}"}, "another CLR profiler"),
        ({"CORECLR_ENABLE_PROFILING": "0"}, "another CLR profiler"),
    ],
)
def test_dotnet_refuses_a_container_instrumented_by_other_means(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ContainerError, match=message):
        DotnetAgent().prepare(make_target(tmp_path, env=env), dry_run=True)


def test_dotnet_downloads_the_zip_for_the_containers_libc_and_machine(
    tmp_path: Path, server: Server
) -> None:
    path = "/releases/v1.13.0/opentelemetry-dotnet-instrumentation-linux-musl-arm64.zip"
    server.files[path] = make_dotnet_zip(tmp_path / "served.zip", "linux-musl-arm64").read_bytes()
    agent = DotnetAgent(releases=server.base)
    target = make_target(tmp_path, dotnet_container("arm64", musl=True), arch="arm64")

    assert agent.prepare(target, dry_run=True).path is not None and server.requests == []
    bundle = agent.prepare(target, dry_run=False)
    agent.prepare(target, dry_run=False)
    assert server.requests == [path]
    assert bundle.path is not None
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "AdditionalDeps",
        "instrument.sh",
        "linux-musl-arm64",
        "net",
        "ophion-bundle.json",
        "store",
    ]


# --- Go ---------------------------------------------------------------------------------------


class FakeImages:
    def __init__(self, present: set[str], pull_error: Exception | None = None) -> None:
        self.present = present
        self.pulled: list[str] = []
        self.pull_error = pull_error

    def get(self, reference: str) -> object:
        if reference not in self.present:
            raise docker.errors.ImageNotFound(reference)
        return object()

    def pull(self, reference: str) -> object:
        if self.pull_error is not None:
            raise self.pull_error
        self.pulled.append(reference)
        self.present.add(reference)
        return object()


@dataclass
class FakeClient:
    images: FakeImages


def test_go_sidecar_shares_the_apps_processes_and_network(tmp_path: Path) -> None:
    client = FakeClient(FakeImages({IMAGE}))
    target = make_target(tmp_path, executable="/app/server", client=client)
    agent = GoAgent()
    bundle = agent.prepare(target, dry_run=False)
    assert env_after(agent, bundle, {}) == {}  # the application itself is left as it is

    body = agent.sidecar_config(target, bundle, ["OTEL_SERVICE_NAME=shop"], "shop-otel-go")
    assert body["Image"] == IMAGE
    assert body["Env"] == ["OTEL_SERVICE_NAME=shop", "OTEL_GO_AUTO_TARGET_EXE=/app/server"]
    host = body["HostConfig"]
    assert host["Privileged"] is True
    assert host["PidMode"] == f"container:{APP_ID}"
    assert host["NetworkMode"] == f"container:{APP_ID}"
    assert host["RestartPolicy"] == {"Name": "unless-stopped"}

    on_host = make_target(tmp_path, FakeContainer(network="host"), executable="/app/server")
    assert agent.sidecar_config(on_host, bundle, [], "x")["HostConfig"]["NetworkMode"] == "host"


def test_go_targets_the_real_path_of_a_linked_executable(tmp_path: Path) -> None:
    container = FakeContainer(links={"/usr/local/bin/server": "/app/bin/server"})
    client = FakeClient(FakeImages({IMAGE}))
    target = make_target(tmp_path, container, executable="/usr/local/bin/server", client=client)
    bundle = GoAgent().prepare(target, dry_run=True)
    env = GoAgent().sidecar_config(target, bundle, [], "x")["Env"]
    assert env == ["OTEL_GO_AUTO_TARGET_EXE=/app/bin/server"]


@pytest.mark.parametrize(
    ("executable", "message"),
    [
        (None, "could not tell which program"),
        ("server", "absolute path"),
        ("/usr/bin/go", "go run"),
    ],
)
def test_go_refuses_without_the_executables_path(
    tmp_path: Path, executable: str | None, message: str
) -> None:
    target = make_target(tmp_path, executable=executable, client=FakeClient(FakeImages({IMAGE})))
    with pytest.raises(ContainerError, match=message):
        GoAgent().prepare(target, dry_run=True)


def test_go_pulls_the_image_only_when_missing_and_not_dry(tmp_path: Path) -> None:
    images = FakeImages(set())
    target = make_target(tmp_path, executable="/app/server", client=FakeClient(images))
    dry = GoAgent().prepare(target, dry_run=True)
    assert images.pulled == [] and "to be pulled" in dry.state
    GoAgent().prepare(target, dry_run=False)
    GoAgent().prepare(target, dry_run=False)
    assert images.pulled == [IMAGE]


def test_go_pull_failure_and_a_missing_local_image_name_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = FakeImages(set(), pull_error=docker.errors.APIError("denied", explanation="denied"))
    target = make_target(tmp_path, executable="/app/server", client=FakeClient(failing))
    with pytest.raises(ContainerError, match="pulling .*denied") as pull:
        GoAgent().prepare(target, dry_run=False)
    assert "--from" in (pull.value.hint or "")

    # The command line hands a --from that names no file over as written: an image name.
    monkeypatch.chdir(tmp_path)
    images = FakeImages({"my/agent:1"})
    source = _local(Path("my/agent:1"))
    assert source is not None
    local = make_target(
        tmp_path, executable="/app/server", client=FakeClient(images), source=source
    )
    assert GoAgent().prepare(local, dry_run=False).image == "my/agent:1"
    missing = make_target(
        tmp_path, executable="/app/server", client=FakeClient(FakeImages(set())), source=source
    )
    with pytest.raises(ContainerError, match="no such image"):
        GoAgent().prepare(missing, dry_run=False)


# --- PHP --------------------------------------------------------------------------------------


def php_container(version: str = "8.3.12", prepend: str = "") -> FakeContainer:
    return FakeContainer(exec_output=[version, prepend])


def make_php_bundle(path: Path) -> Path:
    (path / "ext").mkdir(parents=True)
    (path / "ext" / "opentelemetry.so").write_bytes(b"\x7fELF")
    (path / "vendor" / "composer").mkdir(parents=True)
    (path / "vendor" / "autoload.php").write_text("<?php\n")
    (path / "vendor" / "composer" / "installed.json").write_text("{}")
    return path


def test_php_from_a_local_bundle_loads_extension_and_autoloader(tmp_path: Path) -> None:
    source = make_php_bundle(tmp_path / "php-bundle")
    bundle = PhpAgent().prepare(make_target(tmp_path, php_container(), source=source), False)

    assert bundle.path is not None
    assert (bundle.path / "ext" / "opentelemetry.so").read_bytes() == b"\x7fELF"
    assert (bundle.path / "conf.d" / "zz-ophion-opentelemetry.ini").read_text() == (
        "extension=/otel-auto-instrumentation-php/ext/opentelemetry.so\n"
        "auto_prepend_file=/otel-auto-instrumentation-php/vendor/autoload.php\n"
    )
    assert env_after(PhpAgent(), bundle, {}) == {
        "PHP_INI_SCAN_DIR": ":/otel-auto-instrumentation-php/conf.d",
        "OTEL_PHP_AUTOLOAD_ENABLED": "true",
    }
    user = {"PHP_INI_SCAN_DIR": "/usr/local/etc/php/conf.d", "OTEL_PHP_AUTOLOAD_ENABLED": "false"}
    assert env_after(PhpAgent(), bundle, user) == {
        "PHP_INI_SCAN_DIR": "/usr/local/etc/php/conf.d:/otel-auto-instrumentation-php/conf.d",
        "OTEL_PHP_AUTOLOAD_ENABLED": "false",
    }


@pytest.mark.parametrize(
    ("container", "make_source", "message"),
    [
        (php_container(), lambda p: p.mkdir() or p, "no ext/opentelemetry.so"),
        (php_container(prepend="/app/boot.php"), None, "auto_prepend_file=/app/boot.php"),
        (php_container(version="7.4.33"), None, "needs PHP 8.1 or newer"),
    ],
)
def test_php_refusals(
    tmp_path: Path, container: FakeContainer, make_source: Any, message: str
) -> None:
    source = make_source(tmp_path / "empty") if make_source else None
    with pytest.raises(ContainerError, match=message):
        PhpAgent().prepare(make_target(tmp_path, container, source=source), dry_run=True)


class FakeHelper:
    def __init__(self, client: FakeHelperClient, status: int) -> None:
        self.client, self.id, self.status = client, "helper1", status
        self.removed = False

    def start(self) -> None:
        pass

    def wait(self, timeout: int) -> dict[str, int]:
        return {"StatusCode": self.status}

    def get_archive(self, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        files = {"bundle/ext/opentelemetry.so": b"\x7fELF", "bundle/vendor/autoload.php": b"<?"}
        return iter([tar_of(files)]), {"name": "bundle"}

    def remove(self, force: bool) -> None:
        self.removed = True


class FakeHelperClient:
    """Docker as the PHP build sees it: one helper container, which succeeds or fails."""

    def __init__(self, status: int, log: bytes = b"") -> None:
        self.containers = self
        self.api = self
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.helpers: list[FakeHelper] = []
        self.status, self.log = status, log

    def create(self, image: str, **kwargs: Any) -> FakeHelper:
        self.created.append((image, kwargs))
        self.helpers.append(FakeHelper(self, self.status))
        return self.helpers[-1]

    def logs(self, container_id: str, **kwargs: Any) -> bytes:
        return self.log


def test_php_builds_in_a_helper_from_the_apps_image(tmp_path: Path) -> None:
    client = FakeHelperClient(status=0)
    target = make_target(tmp_path, php_container(), client=client)
    assert PhpAgent().prepare(target, dry_run=True).path is not None and client.created == []

    bundle = PhpAgent().prepare(target, dry_run=False)
    PhpAgent().prepare(target, dry_run=False)
    assert len(client.created) == 1
    image, options = client.created[0]
    assert image == IMAGE_ID and options["user"] == "0"
    assert client.helpers[0].removed
    assert bundle.path is not None and (bundle.path / "vendor" / "autoload.php").is_file()
    assert (bundle.path / "conf.d" / "zz-ophion-opentelemetry.ini").is_file()


def test_php_helper_failure_reports_its_last_lines(tmp_path: Path) -> None:
    log = b"ophion: building the opentelemetry extension 1.2.1 with pecl\nNo releases available\n"
    client = FakeHelperClient(status=1, log=log)
    target = make_target(tmp_path, php_container(), client=client)
    with pytest.raises(ContainerError, match="No releases available") as failed:
        PhpAgent().prepare(target, dry_run=False)
    assert "exit 1" in str(failed.value) and "--from" in (failed.value.hint or "")
    assert client.helpers[0].removed
    assert list((tmp_path / "cache").iterdir()) == []
