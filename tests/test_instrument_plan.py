"""How ``ophion instrument`` plans: environment changes, the recreate body, the endpoint and the
service name, from ``docker inspect`` documents (no engine needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ophiond.containers.agents.nodejs import supported
from ophiond.containers.agents.python import matching_instrumentations
from ophiond.containers.inject import (
    EnvPlanner,
    Record,
    Settings,
    apply_env,
    common_env,
    env_dict,
    original_env,
    parse_attributes,
)
from ophiond.containers.operation import choose_endpoint, choose_service_name
from ophiond.containers.recreate import spec_from_inspect
from ophiond.errors import ContainerError

OLD_ID = "3f2a9c1e5b7d" + "0" * 52
IMAGE_ID = "sha256:" + "a" * 64


def inspect_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Id": OLD_ID,
        "Name": "/shop",
        "Image": IMAGE_ID,
        "Config": {
            "Hostname": OLD_ID[:12],
            "Image": "shop:1.4",
            "Env": ["PATH=/usr/bin", "PYTHONPATH=/app/vendor", "OTEL_SERVICE_NAME=checkout"],
            "Cmd": ["python", "app.py"],
            "Labels": {"team": "payments"},
            "Volumes": {"/data": {}},
            "Healthcheck": {"Test": ["CMD", "python", "-c", "print(1)"], "Interval": 5_000_000_000},
        },
        "HostConfig": {
            "NetworkMode": "shopnet",
            "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
            "Binds": ["/srv/conf:/etc/shop:ro"],
            "PortBindings": {"8000/tcp": [{"HostIp": "", "HostPort": "8000"}]},
            "Mounts": None,
        },
        "Mounts": [
            {"Type": "bind", "Source": "/srv/conf", "Destination": "/etc/shop", "RW": False},
            {"Type": "volume", "Name": "f00dcafe" * 8, "Destination": "/data", "RW": True},
        ],
        "NetworkSettings": {
            "Networks": {
                "shopnet": {
                    "Aliases": ["shop", "api", OLD_ID[:12]],
                    "Gateway": "172.18.0.1",
                    "NetworkID": "n1",
                },
                "backend": {"Aliases": ["shop-backend"], "Gateway": "172.19.0.1"},
            }
        },
    }
    doc.update(overrides)
    return doc


def settings() -> Settings:
    return Settings("shop", "http://127.0.0.1:4318", "0123456789abcdef", {"team": "payments"})


def test_user_otel_variables_are_kept_and_list_variables_extended() -> None:
    planner = EnvPlanner(
        {
            "OTEL_SERVICE_NAME": "checkout",
            "OTEL_RESOURCE_ATTRIBUTES": "team=core,region=eu",
            "NODE_OPTIONS": "--max-old-space-size=256",
        }
    )
    common_env(planner, settings())
    planner.extend("NODE_OPTIONS", "--require /otel/register.js", " ")
    after = {c.name: c.after for c in planner.changes}
    assert after["OTEL_SERVICE_NAME"] == "checkout"
    assert [c.name for c in planner.changes if c.kept] == ["OTEL_SERVICE_NAME"]
    # The user's team=core stays; ophion adds only what is missing, the id among it.
    assert after["OTEL_RESOURCE_ATTRIBUTES"] == (
        "team=core,region=eu,ophion.instrumentation.id=0123456789abcdef"
    )
    assert after["NODE_OPTIONS"] == "--max-old-space-size=256 --require /otel/register.js"
    assert after["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert after["OTEL_METRICS_EXPORTER"] == "otlp"


def test_the_record_gives_back_the_exact_original_environment() -> None:
    env = ["PATH=/usr/bin", "NODE_OPTIONS=--inspect", "OTEL_LOGS_EXPORTER=none", "A=1"]
    planner = EnvPlanner(env_dict(env))
    common_env(planner, settings())
    planner.extend("NODE_OPTIONS", "--require /otel/register.js", " ")
    injected = apply_env(env, planner.changes)
    assert "OTEL_LOGS_EXPORTER=none" in injected
    assert injected[:2] == ["PATH=/usr/bin", "NODE_OPTIONS=--inspect --require /otel/register.js"]
    record = Record(
        instrumentation_id="0123456789abcdef",
        language="nodejs",
        bundle="nodejs-x",
        volume="v",
        target="/otel",
        env_before={c.name: c.before for c in planner.changes if c.changed},
        service_name="shop",
        instrumented_at="2026-11-24T00:00:00+00:00",
    )
    label = record.to_label()
    assert original_env(injected, Record.from_labels({"io.ophion.instrumentation": label})) == env


def test_attributes_must_be_key_value() -> None:
    assert parse_attributes(["deployment.environment=staging", "k=a=b"]) == {
        "deployment.environment": "staging",
        "k": "a=b",
    }
    for bad in ("novalue", "=x", "a b=c", "k=a,b"):
        with pytest.raises(ContainerError, match="is not KEY=VALUE"):
            parse_attributes([bad])


def test_recreate_body_keeps_the_configuration_and_reuses_anonymous_volumes() -> None:
    attrs = inspect_doc()
    spec = spec_from_inspect(attrs, IMAGE_ID)
    config = spec.config
    assert spec.name == "shop"
    assert config["Image"] == "shop:1.4"  # the tag still names the container's image
    assert "Hostname" not in config  # Docker's default (the new id), not the old id
    assert config["Healthcheck"] == attrs["Config"]["Healthcheck"]
    assert config["Labels"] == {"team": "payments"}
    host = config["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert host["PortBindings"] == attrs["HostConfig"]["PortBindings"]
    assert host["Binds"] == ["/srv/conf:/etc/shop:ro", "f00dcafe" * 8 + ":/data"]
    # The first network at create with its aliases (less the old id); the others connected after.
    assert config["NetworkingConfig"]["EndpointsConfig"] == {
        "shopnet": {"Aliases": ["shop", "api"], "NetworkID": "n1"}
    }
    assert spec.more_networks == {"backend": {"Aliases": ["shop-backend"]}}
    assert attrs == inspect_doc(), "the inspect document must not be changed"


def test_recreate_body_uses_the_image_id_when_the_tag_moved() -> None:
    spec = spec_from_inspect(inspect_doc(), "sha256:" + "b" * 64)
    assert spec.config["Image"] == IMAGE_ID


def test_recreate_body_keeps_a_chosen_hostname_and_mount_volumes() -> None:
    attrs = inspect_doc()
    attrs["Config"]["Hostname"] = "shop-1"
    attrs["HostConfig"]["Mounts"] = [{"Type": "volume", "Target": "/data"}]
    spec = spec_from_inspect(attrs, IMAGE_ID)
    assert spec.config["Hostname"] == "shop-1"
    assert spec.config["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Target": "/data", "Source": "f00dcafe" * 8}
    ]
    assert spec.config["HostConfig"]["Binds"] == ["/srv/conf:/etc/shop:ro"]


def test_endpoint_under_host_networking_is_loopback() -> None:
    attrs = inspect_doc()
    attrs["HostConfig"]["NetworkMode"] = "host"
    endpoint, why = choose_endpoint(None, attrs, None, "127.0.0.1:4318")
    assert endpoint == "http://127.0.0.1:4318"
    assert "host networking" in why


def test_endpoint_on_a_bridge_is_the_gateway_when_ophiond_listens_there() -> None:
    endpoint, why = choose_endpoint(None, inspect_doc(), None, "0.0.0.0:4318")
    assert endpoint == "http://172.18.0.1:4318"
    assert "shopnet" in why and "172.18.0.1" in why


def test_endpoint_on_a_bridge_refuses_a_loopback_only_ophiond() -> None:
    with pytest.raises(ContainerError, match="cannot reach") as caught:
        choose_endpoint(None, inspect_doc(), None, "127.0.0.1:4318")
    assert "--http-listen 172.18.0.1:4318" in (caught.value.hint or "")


def test_endpoint_refusals_and_the_explicit_one() -> None:
    attrs = inspect_doc()
    attrs["HostConfig"]["NetworkMode"] = "none"
    with pytest.raises(ContainerError, match="no network"):
        choose_endpoint(None, attrs, None, "127.0.0.1:4318")
    with pytest.raises(ContainerError, match="OTLP/HTTP"):
        choose_endpoint(None, inspect_doc(), None, None)
    assert choose_endpoint(None, attrs, "http://collector:4318/", None) == (
        "http://collector:4318",
        "given with --endpoint",
    )


def test_service_name_from_compose_then_the_container_name() -> None:
    attrs = inspect_doc()
    assert choose_service_name(attrs, None) == ("shop", "the container's name")
    composed = copy.deepcopy(attrs)
    composed["Config"]["Labels"]["com.docker.compose.service"] = "cart"
    assert choose_service_name(composed, None)[0] == "cart"
    assert choose_service_name(composed, "orders")[0] == "orders"


def test_python_instrumentations_follow_the_app_libraries() -> None:
    table = {
        "default": ["opentelemetry-instrumentation-urllib==0.66b1"],
        "libraries": [
            {"library": "flask >= 1.0", "instrumentation": "opentelemetry-instrumentation-flask"},
            {"library": "django >= 2.0", "instrumentation": "opentelemetry-instrumentation-django"},
            {
                "library": "psycopg2 >= 2.7.3.1",
                "instrumentation": "opentelemetry-instrumentation-psycopg2",
            },
            {
                "library": "requests ~= 2.0",
                "instrumentation": "opentelemetry-instrumentation-requests",
            },
        ],
    }
    chosen = matching_instrumentations(
        table, {"Flask": "3.1.0", "requests": "1.2.3", "psycopg2": "2.9.9"}
    )
    assert chosen == [
        "opentelemetry-instrumentation-flask",
        "opentelemetry-instrumentation-psycopg2",
        "opentelemetry-instrumentation-urllib==0.66b1",
    ]


def test_node_versions_the_package_supports() -> None:
    assert [
        supported(v) for v in ("18.18.2", "18.19.0", "20.5.1", "20.6.0", "22.11.0", "v24.1.0")
    ] == [
        False,
        True,
        False,
        True,
        True,
        True,
    ]
    assert not supported("garbage")
