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
