"""``ophion instrument`` end to end: a real Docker engine, real app containers, the real agents
from PyPI and npm, and a real ophiond receiving what the instrumented apps send."""

from __future__ import annotations

import copy
import io
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, ophion
from docker.types import Mount
from docker_engine import DockerEngine, free_port, run_app, wait_http

pytest_plugins = ["docker_engine"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def bundle_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle cache for the session: each test has its own OPHION_HOME, and building the
    same bundles with pip and npm in every test would only repeat the same downloads."""
    return tmp_path_factory.mktemp("instrumentation")


@pytest.fixture
def env(
    clean_docker_engine: DockerEngine,
    daemon: RunningDaemon,
    bundle_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> DockerEngine:
    """The engine, a running ophiond, and `ophion` pointed at both."""
    monkeypatch.setenv("DOCKER_HOST", clean_docker_engine.host)
    data = daemon.home / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "instrumentation").symlink_to(bundle_cache)
    return clean_docker_engine


class Traffic:
    """Requests to an app every 0.2 s while a test runs (errors ignored: the app restarts)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                wait_http(self.url, timeout=0.5)
            except AssertionError:
                pass

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def name() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone (the tests' pipe is 80 columns wide)."""
    return " ".join(text.split())


def inspect(engine: DockerEngine, name: str) -> dict[str, Any]:
    attrs: dict[str, Any] = engine.client.api.inspect_container(name)
    return attrs


def mounts(attrs: dict[str, Any]) -> set[tuple[str, str, str, bool]]:
    return {(m["Type"], m.get("Name", ""), m["Destination"], m["RW"]) for m in attrs["Mounts"]}


def put_file(engine: DockerEngine, name: str, directory: str, filename: str, text: str) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo(filename)
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    assert engine.client.api.put_archive(name, directory, data.getvalue())


def read_file(engine: DockerEngine, name: str, path: str) -> str:
    stream, _ = engine.client.api.get_archive(name, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        return member.read().decode()


def wait_rows(daemon: RunningDaemon, query: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = daemon.sql(query)
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def containers(engine: DockerEngine) -> set[str]:
    return {c.name for c in engine.client.containers.list(all=True)}


def test_python_app_is_instrumented_and_uninstrumented(
    env: DockerEngine,
    daemon: RunningDaemon,
    python_app_image: str,
    name: str,
) -> None:
    port = free_port()
    env.client.volumes.create(f"{name}-data")
    app = run_app(
        env,
        python_app_image,
        name,
        port,
        environment={"OTEL_METRIC_EXPORT_INTERVAL": "2000", "SHOP_MODE": "test"},
        labels={"team": "payments"},
        restart_policy={"Name": "unless-stopped"},
        volumes={f"{name}-data": {"bind": "/data", "mode": "rw"}},
        mounts=[Mount("/cache", None, type="volume")],  # an anonymous volume
    )
    put_file(env, name, "/cache", "kept.txt", "written before instrumenting")
    before = inspect(env, name)

    with Traffic(f"http://127.0.0.1:{port}/work"):
        done = ophion("instrument", name, "--timeout", "90", timeout=300)
    assert done.returncode == 0, (
        done.stderr + done.stdout + "\nophiond log:\n" + daemon.log()[-4000:]
    )
    assert "language python" in flat(done.stdout)
    assert "is instrumented: its first telemetry arrived" in flat(done.stdout)
    assert f"ophion traces --service {name}" in flat(done.stdout)

    spans = wait_rows(
        daemon,
        f"SELECT name, kind FROM spans WHERE service_name = '{name}' AND kind = 'SERVER'",
    )
    assert {"GET /work"} <= {row["name"] for row in spans}
    with Traffic(f"http://127.0.0.1:{port}/work"):
        metrics = wait_rows(
            daemon,
            f"SELECT DISTINCT metric_name FROM metric_points WHERE service_name = '{name}'",
        )
    assert any(row["metric_name"].startswith("http.server") for row in metrics), metrics
    assert '"total"' in wait_http(f"http://127.0.0.1:{port}/work")

    after = inspect(env, name)
    assert after["Id"] != app.id
    assert containers(env) == {name}, "the old container is removed once verified"
    env_after = after["Config"]["Env"]
    for item in before["Config"]["Env"]:
        if not item.startswith("PYTHONPATH="):
            assert item in env_after
    assert (
        "PYTHONPATH=/otel-auto-instrumentation-python/opentelemetry/instrumentation/"
        "auto_instrumentation:/app/vendor:/otel-auto-instrumentation-python" in env_after
    )
    assert "OTEL_METRIC_EXPORT_INTERVAL=2000" in env_after
    assert after["Config"]["Labels"]["team"] == "payments"
    assert after["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert mounts(before) < mounts(after)
    assert read_file(env, name, "/cache/kept.txt") == "written before instrumenting"

    undone = ophion("uninstrument", name, timeout=120)
    assert undone.returncode == 0, undone.stderr + undone.stdout
    restored = inspect(env, name)
    assert restored["Config"]["Env"] == before["Config"]["Env"]
    assert restored["Config"]["Labels"] == before["Config"]["Labels"]
    assert restored["HostConfig"]["RestartPolicy"] == before["HostConfig"]["RestartPolicy"]
    assert mounts(restored) == mounts(before)
    assert read_file(env, name, "/cache/kept.txt") == "written before instrumenting"
    assert wait_http(f"http://127.0.0.1:{port}/") == "ok"
    assert containers(env) == {name}


def test_node_app_keeps_the_users_otel_settings_and_does_not_stack(
    env: DockerEngine,
    daemon: RunningDaemon,
    node_app_image: str,
    name: str,
) -> None:
    port = free_port()
    run_app(
        env,
        node_app_image,
        name,
        port,
        environment={"OTEL_SERVICE_NAME": "storefront", "OTEL_METRIC_EXPORT_INTERVAL": "2000"},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
    )
    original = inspect(env, name)
    with Traffic(f"http://127.0.0.1:{port}/work"):
        done = ophion(
            "instrument", name, "--attr", "deployment.environment=e2e", "--timeout", "90",
            timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "language nodejs" in flat(done.stdout)
    assert "as service storefront" in flat(
        done.stdout
    )  # the user's OTEL_SERVICE_NAME, not the name
    assert "OTEL_SERVICE_NAME=storefront (yours, kept)" in flat(done.stdout)

    with Traffic(f"http://127.0.0.1:{port}/work"):
        spans = wait_rows(
            daemon,
            "SELECT name, resource_attributes->>'$.\"deployment.environment\"' AS environment "
            "FROM spans WHERE service_name = 'storefront' AND kind = 'SERVER'",
        )
        metrics = wait_rows(
            daemon,
            "SELECT DISTINCT metric_name FROM metric_points WHERE service_name = 'storefront'",
        )
    assert spans and {row["environment"] for row in spans} == {"e2e"}
    assert any(row["metric_name"].startswith("http.server") for row in metrics), metrics
    attrs = inspect(env, name)
    node_options = [e for e in attrs["Config"]["Env"] if e.startswith("NODE_OPTIONS=")]
    assert node_options == [
        "NODE_OPTIONS=--max-old-space-size=256 --require /otel-auto-instrumentation-nodejs/"
        "node_modules/@opentelemetry/auto-instrumentations-node/build/src/register.js"
    ]
    assert attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}

    again = ophion("instrument", name, "--no-verify", timeout=120)
    assert again.returncode == 1
    assert "already instrumented" in flat(again.stderr) and "--force" in flat(again.stderr)
    assert inspect(env, name)["Id"] == attrs["Id"]

    forced = ophion("instrument", name, "--force", "--no-verify", timeout=300)
    assert forced.returncode == 0, forced.stderr + forced.stdout
    redone = inspect(env, name)
    assert redone["Id"] != attrs["Id"]
    assert [e for e in redone["Config"]["Env"] if e.startswith("NODE_OPTIONS=")] == node_options
    resource = [e for e in redone["Config"]["Env"] if e.startswith("OTEL_RESOURCE_ATTRIBUTES=")]
    assert len(resource) == 1 and resource[0].count("ophion.instrumentation.id=") == 1
    assert wait_http(f"http://127.0.0.1:{port}/") == "ok"

    # A stopped container is taken back to its original configuration and stays stopped.
    env.client.api.stop(name, timeout=5)
    undone = ophion("uninstrument", name, timeout=120)
    assert undone.returncode == 0, undone.stderr + undone.stdout
    restored = inspect(env, name)
    assert not restored["State"]["Running"]
    assert restored["Config"]["Env"] == original["Config"]["Env"]
    assert restored["Config"]["Labels"] == original["Config"]["Labels"]
    assert restored["HostConfig"]["RestartPolicy"] == original["HostConfig"]["RestartPolicy"]
    assert containers(env) == {name}


def test_a_failed_verification_puts_the_exact_original_back(
    env: DockerEngine,
    python_app_image: str,
    name: str,
) -> None:
    port = free_port()
    run_app(env, python_app_image, name, port, restart_policy={"Name": "always"})
    before = inspect(env, name)
    # Nothing listens on port 9: telemetry never arrives, and verification gives up.
    done = ophion(
        "instrument", name, "--endpoint", "http://127.0.0.1:9", "--timeout", "8", timeout=300
    )
    assert done.returncode == 1
    assert f"no telemetry from {name} arrived within 8s" in flat(done.stderr)
    assert "the original container is back" in flat(done.stderr)
    assert "\n  | " in done.stderr, "the instrumented container's last log lines are shown"
    after = inspect(env, name)
    assert after["Id"] == before["Id"]
    assert after["Name"] == before["Name"]
    assert after["Config"] == before["Config"]
    assert after["HostConfig"] == before["HostConfig"]
    assert after["State"]["Running"]
    assert containers(env) == {name}
    assert wait_http(f"http://127.0.0.1:{port}/") == "ok"


def test_dry_run_changes_nothing(
    env: DockerEngine,
    python_app_image: str,
    name: str,
) -> None:
    port = free_port()
    run_app(env, python_app_image, name, port)
    before = inspect(env, name)
    volumes = {v.name for v in env.client.volumes.list()}
    done = ophion("instrument", name, "--dry-run", timeout=120)
    assert done.returncode == 0, done.stderr
    for expected in ("language python", "bundle opentelemetry-distro", "PYTHONPATH=", "plan:"):
        assert expected in flat(done.stdout)
    assert "nothing was changed" in flat(done.stdout)
    after = inspect(env, name)
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["Config"] == before["Config"]
    assert {v.name for v in env.client.volumes.list()} == volumes
    assert containers(env) == {name}


def test_clear_refusals(env: DockerEngine, python_app_image: str, name: str) -> None:
    missing = ophion("instrument", "no-such-container", timeout=60)
    assert missing.returncode == 1
    assert "no container named 'no-such-container'" in flat(missing.stderr)

    port = free_port()
    app = run_app(env, python_app_image, name, port)
    unsupported = ophion("instrument", name, "cobol", timeout=60)
    assert unsupported.returncode == 1
    assert "unsupported language 'cobol'" in flat(unsupported.stderr)
    assert "python, nodejs, java, dotnet, go, php" in flat(unsupported.stderr)

    never = ophion("uninstrument", name, timeout=60)
    assert never.returncode == 1 and "is not instrumented by ophion" in flat(never.stderr)

    app.stop(timeout=5)
    stopped = ophion("instrument", name, timeout=60)
    assert stopped.returncode == 1
    assert "is not running" in flat(stopped.stderr) and f"docker start {name}" in flat(
        stopped.stderr
    )
    assert "Traceback" not in missing.stderr + unsupported.stderr + stopped.stderr


def test_docker_unreachable_says_so(tmp_path: Path) -> None:
    result = ophion(
        "instrument", "app", "--no-verify", "--endpoint", "http://127.0.0.1:4318",
        env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Docker is not reachable" in flat(result.stderr)
    assert "DOCKER_HOST" in flat(result.stderr)
    assert "Traceback" not in flat(result.stderr)


@pytest.fixture(scope="session")
def go_agent_standin(docker_engine: DockerEngine, python_app_image: str) -> str:
    """A local image standing in for the Go eBPF agent (tests/docker_apps/go_agent_standin.py)."""
    script = (Path(__file__).parent / "docker_apps" / "go_agent_standin.py").read_text()
    api = docker_engine.client.api
    holder = api.create_container(python_app_image, command=["true"])["Id"]
    try:
        put_file(docker_engine, holder, "/", "agent.py", script)
        api.commit(
            holder,
            repository="ophion-test/go-agent-standin",
            tag="1",
            changes=['CMD ["python3.11", "/agent.py"]'],
        )
    finally:
        api.remove_container(holder, force=True)
    return "ophion-test/go-agent-standin:1"


def test_go_runs_as_a_sidecar_in_the_apps_process_namespace(
    env: DockerEngine,
    daemon: RunningDaemon,
    python_app_image: str,
    go_agent_standin: str,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sidecar path, in process: this sandbox's engine cannot start privileged containers
    (runc cannot apply every capability here), so the sidecar the Go agent asks for is checked
    to be privileged and then started without it; the stand-in needs no more."""
    from ophion_cli.commands.instrument import first_seen_over
    from ophiond.containers import operation
    from ophiond.containers.agents.go import GoAgent

    asked: list[dict[str, Any]] = []
    original = GoAgent.sidecar_config

    def unprivileged(self: GoAgent, *args: Any) -> dict[str, Any]:
        body = original(self, *args)
        asked.append(copy.deepcopy(body))
        body["HostConfig"].pop("Privileged")
        body["HostConfig"].pop("Binds")
        return body

    monkeypatch.setattr(GoAgent, "sidecar_config", unprivileged)
    port = free_port()
    # Any program stands for the Go binary: the sidecar mechanics do not depend on it.
    run_app(env, python_app_image, name, port, command=["/usr/bin/python3.11", "/app/app.py"])
    before = inspect(env, name)
    request = operation.Request(name, "go", source=Path(go_agent_standin))
    listen = daemon.listen["http"]
    plan = operation.plan(env.client, request, listen, tmp_path, False, lambda _m: None)
    assert "privileged sidecar" in plan.bundle.description
    assert asked[0]["HostConfig"]["Privileged"] is True
    assert asked[0]["HostConfig"]["PidMode"] == f"container:{before['Id']}"
    outcome = operation.apply(env.client, plan, first_seen_over(daemon.api), 60, lambda _m: None)
    assert outcome.arrival is not None and outcome.arrival.service_name == name
    assert outcome.arrival.what.startswith("attached to pid ")  # it saw the app's process

    sidecar = inspect(env, f"{name}-otel-go")
    assert "OTEL_GO_AUTO_TARGET_EXE=/usr/bin/python3.11" in sidecar["Config"]["Env"]
    after = inspect(env, name)
    assert after["Id"] == before["Id"] and after["Config"] == before["Config"]

    again = ophion("instrument", name, "go", "--from", go_agent_standin, "--no-verify")
    assert again.returncode == 1 and "already instrumented" in flat(again.stderr)

    undone = ophion("uninstrument", name, timeout=120)
    assert undone.returncode == 0, undone.stderr + undone.stdout
    assert containers(env) == {name}
    assert inspect(env, name)["Id"] == before["Id"]
