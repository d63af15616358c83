"""Settings precedence, parsing and the configuration reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from ophiond.config import (
    SETTING_NAMES,
    ListenAddress,
    load_settings,
    parse_duration,
    parse_listen,
    parse_size,
    settings_reference,
)
from ophiond.errors import ConfigError
from ophiond.model import IngestLimits

REPO = Path(__file__).resolve().parent.parent


def test_precedence_defaults_file_env_flags(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "config.toml").write_text(
        'grpc_listen = "127.0.0.1:1111"\nhttp_listen = "127.0.0.1:2222"\nqueue_size = 5\n'
        'retention_max_age = "2d"\n'
    )
    env = {
        "OPHION_HOME": str(isolated_env),
        "OPHION_HTTP_LISTEN": "127.0.0.1:3333",
        "OPHION_QUEUE_SIZE": "7",
    }
    valid = load_settings({"queue_size": 9}, env=env).validate()
    assert valid.grpc_listen == ListenAddress("127.0.0.1", 1111)  # file over default
    assert valid.http_listen == ListenAddress("127.0.0.1", 3333)  # env over file
    assert valid.queue_size == 9  # flag over env
    assert valid.retention_max_age == 2 * 86400
    assert valid.max_request_size == 20 * 1024 * 1024  # default


def test_ophion_home_moves_everything(tmp_path: Path) -> None:
    paths = load_settings(env={"OPHION_HOME": str(tmp_path)}).validate().paths
    assert paths.config_file == tmp_path / "config.toml"
    assert paths.data_dir == tmp_path / "data"
    assert paths.state_dir == tmp_path / "state"
    assert paths.api_socket == tmp_path / "state" / "api.sock"


def test_unknown_key_in_file_suggests_the_right_one(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "config.toml").write_text('retention_max_dsk = "1GB"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(env={"OPHION_HOME": str(isolated_env)})
    assert "retention_max_dsk" in err.value.message
    assert err.value.hint == "did you mean 'retention_max_disk'?"


def test_unknown_environment_variable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OPHION_GRPC_LISTN") as err:
        load_settings(env={"OPHION_HOME": str(tmp_path), "OPHION_GRPC_LISTN": "x"})
    assert err.value.hint == "did you mean 'grpc_listen'?"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    env = {"OPHION_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="queue_size must be a whole number"):
        load_settings(env={**env, "OPHION_QUEUE_SIZE": "lots"})
    with pytest.raises(ConfigError, match="retention_max_age"):
        load_settings(env={**env, "OPHION_RETENTION_MAX_AGE": "forever"}).validate()
    with pytest.raises(ConfigError, match="http_listen"):
        load_settings(env={**env, "OPHION_HTTP_LISTEN": "4318"}).validate()


def test_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"OPHION_HOME": str(tmp_path)}, config_file=tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2m", 120),
        ("12h", 43200),
        ("7d", 604800),
        ("1w", 604800),
        (30, 30),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("512MB", 512_000_000), ("20MiB", 20 * 2**20), ("1GB", 10**9), ("100", 100)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_listen_addresses() -> None:
    assert parse_listen("[::1]:4317") == ListenAddress("::1", 4317)
    assert parse_listen("0.0.0.0:0") == ListenAddress("0.0.0.0", 0)
    assert parse_listen("off") is None
    with pytest.raises(ConfigError):
        parse_listen("localhost:99999")


def test_configuration_doc_lists_every_setting() -> None:
    """docs/configuration.md must name every setting with its variable, and no setting that
    does not exist."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    for name, _default, _description in settings_reference():
        assert f"`{name}`" in doc, f"docs/configuration.md does not document {name}"
        assert f"OPHION_{name.upper()}" in doc
    import re

    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, flags=re.M))
    assert documented == set(SETTING_NAMES)


def test_example_config_is_valid_with_every_line_uncommented(tmp_path: Path) -> None:
    example = (REPO / "share" / "config.example.toml").read_text()
    lines = [line[2:] for line in example.splitlines() if line.startswith("# ") and " = " in line]
    assert {line.split(" = ")[0] for line in lines} == set(SETTING_NAMES)
    (tmp_path / "config.toml").write_text("\n".join(line.split("  #")[0] for line in lines))
    load_settings(env={"OPHION_HOME": str(tmp_path)}).validate()


def test_api_listen_on_means_its_default_address(tmp_path: Path) -> None:
    valid = load_settings(env={"OPHION_HOME": str(tmp_path), "OPHION_API_LISTEN": "on"}).validate()
    assert valid.api_listen == ListenAddress("127.0.0.1", 8080)
    off = load_settings(env={"OPHION_HOME": str(tmp_path)}).validate()
    assert off.api_listen is None


def test_value_limits_are_read_checked_and_default_to_the_decoders(tmp_path: Path) -> None:
    home = {"OPHION_HOME": str(tmp_path)}
    assert load_settings(env=home).validate().ingest_limits == IngestLimits()
    raised = {**home, "OPHION_MAX_ATTRIBUTE_VALUE_SIZE": "1MiB", "OPHION_MAX_SPAN_EVENTS": "1000"}
    limits = load_settings(env=raised).validate().ingest_limits
    assert limits == IngestLimits(attribute_value_size=1 << 20, events_per_span=1000)
    with pytest.raises(ConfigError, match="max_log_body_size must be at least 1KiB"):
        load_settings(env={**home, "OPHION_MAX_LOG_BODY_SIZE": "100"}).validate()
    with pytest.raises(ConfigError, match="max_span_links must not be negative"):
        load_settings(env={**home, "OPHION_MAX_SPAN_LINKS": "-1"}).validate()


def test_client_limits_are_read_and_checked(tmp_path: Path) -> None:
    home = {"OPHION_HOME": str(tmp_path)}
    limits = load_settings(env=home).validate().client_limits
    assert (limits.header_timeout, limits.body_timeout) == (10, 20)
    assert (limits.body_min_rate, limits.max_per_address) == (500, 32)
    changed = {
        **home,
        "OPHION_CLIENT_HEADER_TIMEOUT": "1500ms",
        "OPHION_CLIENT_BODY_MIN_RATE": "2000",
        "OPHION_MAX_CONNECTIONS_PER_ADDRESS": "8",
    }
    limits = load_settings(env=changed).validate().client_limits
    assert (limits.header_timeout, limits.body_min_rate, limits.max_per_address) == (1.5, 2000, 8)
    with pytest.raises(ConfigError, match="client_body_timeout must be positive"):
        load_settings(env={**home, "OPHION_CLIENT_BODY_TIMEOUT": "0s"}).validate()
    with pytest.raises(ConfigError, match="max_connections_per_address must be from 1 to 256"):
        load_settings(env={**home, "OPHION_MAX_CONNECTIONS_PER_ADDRESS": "1000"}).validate()
