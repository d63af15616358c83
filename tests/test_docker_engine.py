"""The Docker test set-up itself: the engine starts, both app images serve on the host network,
and volumes mount. These fail first when CI's Docker is broken, before any instrumentation test."""

from __future__ import annotations

import json

import pytest
from docker.types import Mount
from docker_engine import DockerEngine, container_log, free_port, run_app, wait_http, wait_log

pytest_plugins = ["docker_engine"]

pytestmark = pytest.mark.slow


def image_env(engine: DockerEngine, image: str) -> dict[str, str]:
    env: list[str] = engine.client.images.get(image).attrs["Config"]["Env"]
    return dict(item.split("=", 1) for item in env)


def test_python_app_serves_on_the_host_network(
    clean_docker_engine: DockerEngine, python_app_image: str
) -> None:
    port = free_port()
    app = run_app(clean_docker_engine, python_app_image, "ophion-test-python-app", port)

    assert wait_http(f"http://127.0.0.1:{port}/") == "ok"
    assert json.loads(wait_http(f"http://127.0.0.1:{port}/work"))["total"] > 0
    wait_log(app, "worked out total=")
    # What instrumenting must cope with: a PYTHONPATH to extend and no PYTHON_VERSION to read.
    env = image_env(clean_docker_engine, python_app_image)
    assert env["PYTHONPATH"] == "/app/vendor"
    assert "PYTHON_VERSION" not in env
    # The app ends on SIGTERM as PID 1 (exit 0, not docker stop's SIGKILL after the timeout).
    app.stop(timeout=10)
    app.reload()
    assert app.attrs["State"]["ExitCode"] == 0, container_log(app)


def test_node_app_serves_on_the_host_network(
    clean_docker_engine: DockerEngine, node_app_image: str
) -> None:
    port = free_port()
    app = run_app(clean_docker_engine, node_app_image, "ophion-test-node-app", port)

    assert wait_http(f"http://127.0.0.1:{port}/") == "ok"
    assert json.loads(wait_http(f"http://127.0.0.1:{port}/work"))["total"] > 0
    wait_log(app, "worked out total=")
    env = image_env(clean_docker_engine, node_app_image)
    assert env["NODE_OPTIONS"] == "--max-old-space-size=256"
    assert env["NODE_VERSION"][0].isdigit()
    app.stop(timeout=10)
    app.reload()
    assert app.attrs["State"]["ExitCode"] == 0, container_log(app)


def test_named_and_anonymous_volumes_mount(
    clean_docker_engine: DockerEngine, python_app_image: str
) -> None:
    client = clean_docker_engine.client
    volume = client.volumes.create("ophion-test-data")
    try:
        port = free_port()
        app = run_app(
            clean_docker_engine,
            python_app_image,
            "ophion-test-volumes",
            port,
            volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            mounts=[Mount("/cache", None, type="volume")],
        )
        write = "open('/data/kept', 'w').write('named'); open('/cache/kept', 'w').write('anon')"
        assert app.exec_run(["python3.11", "-c", write]).exit_code == 0

        app.reload()
        mounts = {m["Destination"]: m for m in app.attrs["Mounts"]}
        assert mounts["/data"]["Name"] == "ophion-test-data"
        assert mounts["/cache"]["Type"] == "volume"
        anonymous = mounts["/cache"]["Name"]
        assert anonymous and anonymous != "ophion-test-data"

        # Both volumes outlive the container's restart with their data.
        app.restart(timeout=10)
        wait_http(f"http://127.0.0.1:{port}/")
        read = "print(open('/data/kept').read(), open('/cache/kept').read())"
        result = app.exec_run(["python3.11", "-c", read])
        assert result.output.decode().split() == ["named", "anon"]
        app.remove(force=True, v=True)
    finally:
        volume.remove(force=True)
