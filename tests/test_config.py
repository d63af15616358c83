"""Settings precedence, parsing and the configuration reference."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import OPHIOND

from ophiond.config import (
    SETTING_NAMES,
    ListenAddress,
    config_sections,
    field_docs,
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


def test_rules_and_playbooks_live_beside_the_config_file(tmp_path: Path) -> None:
    paths = load_settings(env={"OPHION_HOME": str(tmp_path)}).validate().paths
    assert (paths.rules_dir, paths.playbooks_dir) == (tmp_path / "rules", tmp_path / "playbooks")
    assert not paths.rules_dir.exists()  # given a home, not created: their engines come later
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ophion.toml").write_text("")
    named = load_settings(
        env={"OPHION_HOME": str(tmp_path)}, config_file=tmp_path / "etc" / "ophion.toml"
    )
    assert named.validate().paths.rules_dir == tmp_path / "etc" / "rules"


# ---------------------------------------------------------------------------------------------
# Tables: sections defined here, since the product registers none yet


@dataclass(frozen=True)
class Route:
    """[test.route]"""

    group_by: str = "service"
    """Label that groups alerts."""

    group_wait: str = "30s"
    """Wait before the first notification of a group."""


@dataclass(frozen=True)
class Receiver:
    """One of [[test.receivers]]."""

    name: str
    """Required: an array item has no sensible default name."""

    url: str = ""
    """Where notifications go."""


@dataclass(frozen=True)
class ValidSample:
    interval: float
    budget: int
    retries: int
    enabled: bool
    group_wait: float
    receivers: tuple[str, ...]


@dataclass(frozen=True)
class SampleSection:
    """[test]: one key of each kind a section may have."""

    interval: str = "1m"
    """A duration."""

    budget: str = "10MB"
    """A size."""

    retries: int = 3
    """A whole number."""

    enabled: bool = False
    """A switch."""

    route: Route = field(default_factory=Route)
    """A sub-table."""

    receivers: list[Receiver] = field(default_factory=list)
    """An array of tables."""

    def validate(self) -> ValidSample:
        return ValidSample(
            interval=parse_duration(self.interval, "test.interval"),
            budget=parse_size(self.budget, "test.budget"),
            retries=self.retries,
            enabled=self.enabled,
            group_wait=parse_duration(self.route.group_wait, "test.route.group_wait"),
            receivers=tuple(r.name for r in self.receivers),
        )


@dataclass(frozen=True)
class OtherSection:
    """[tracing]: a second table, for the hints."""

    sample: float = 1.0
    """A number."""

    def validate(self) -> OtherSection:
        return self


SECTIONS = {"test": SampleSection, "tracing": OtherSection}

GOOD_TABLES = """
queue_size = 5

[test]
interval = "90s"
budget = "2MiB"
retries = 7
enabled = true

[test.route]
group_wait = "5s"

[[test.receivers]]
name = "ops"
url = "https://example.com/hook"

[[test.receivers]]
name = "dev"
"""


def _load(home: Path, text: str, **env: str) -> SampleSection:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)
    settings = load_settings(env={"OPHION_HOME": str(home), **env}, sections=SECTIONS)
    return settings.section(SampleSection)


def test_a_table_is_read_into_its_section_and_validated(tmp_path: Path) -> None:
    home = {"OPHION_HOME": str(tmp_path)}
    tmp_path.joinpath("config.toml").write_text(GOOD_TABLES)
    settings = load_settings(env=home, sections=SECTIONS)
    assert settings.queue_size == 5  # flat keys beside tables, as before
    section = settings.section(SampleSection)
    assert section.route == Route(group_wait="5s")  # keys left out keep their defaults
    assert section.receivers == [Receiver("ops", "https://example.com/hook"), Receiver("dev")]
    assert settings.section(OtherSection) == OtherSection()  # a table left out: defaults
    valid = settings.validate().section(SampleSection)
    assert valid == ValidSample(90, 2 << 20, 7, True, 5, ("ops", "dev"))
    tmp_path.joinpath("config.toml").write_text('[test]\ninterval = "soon"\n')
    with pytest.raises(ConfigError, match="test.interval: 'soon' is not a duration"):
        load_settings(env=home, sections=SECTIONS).validate()


def test_unknown_table_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.toml: unknown table \[tset\]") as err:
        _load(tmp_path, "[tset]\nretries = 1\n")
    assert err.value.hint == "did you mean [test]? known tables: [test], [tracing]"
    with pytest.raises(ConfigError, match="unknown table") as err:
        _load(tmp_path, "[alerting]\nx = 1\n")
    assert err.value.hint == "known tables: [test], [tracing]"
    # This ophiond has none: the same strictness, said plainly.
    (tmp_path / "config.toml").write_text("[alerting]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown table") as err:
        load_settings(env={"OPHION_HOME": str(tmp_path)})
    assert err.value.hint == "known tables: none, this ophiond reads no tables"


def test_unknown_key_in_a_table_names_table_dot_key_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "[test]\nretrys = 1\n")
    assert err.value.message == f"{tmp_path / 'config.toml'}: unknown setting 'test.retrys'"
    assert err.value.hint == "did you mean 'test.retries'?"
    with pytest.raises(ConfigError, match="'test.route.group_wiat'") as err:
        _load(tmp_path, '[test.route]\ngroup_wiat = "1s"\n')
    assert err.value.hint == "did you mean 'test.route.group_wait'?"
    with pytest.raises(ConfigError, match=r"'test.receivers\[0\].uri'"):
        _load(tmp_path, '[[test.receivers]]\nname = "a"\nuri = "x"\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[test]\nretries = "many"', "test.retries must be a whole number, not 'many'"),
        ('[test]\nenabled = "maybe"', "test.enabled must be true or false, not 'maybe'"),
        ("[test]\ninterval = [1]", r"test.interval must be a string, not \[1\]"),
        ("[test]\nroute = 3", r"test.route must be a table \(\[test.route\]\), not 3"),
        ("[test]\nreceivers = 3", r"test.receivers must be an array of tables"),
        ('[[test.receivers]]\nurl = "x"', r"test.receivers\[0\] needs name"),
        ("test = 3", r"test is a table, write it \[test\]"),
    ],
)
def test_wrong_type_in_a_table_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text + "\n")


def test_environment_sets_a_table_key_over_the_file(tmp_path: Path) -> None:
    section = _load(
        tmp_path,
        GOOD_TABLES,
        OPHION_TEST__RETRIES="9",
        OPHION_TEST__ENABLED="off",
        OPHION_TEST__ROUTE__GROUP_BY="host",
        OPHION_QUEUE_SIZE="11",  # a flat one beside them, as before
    )
    assert (section.retries, section.enabled, section.interval) == (9, False, "90s")
    assert section.route == Route(group_by="host", group_wait="5s")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "", OPHION_TEST__RETRYS="1")
    assert (
        err.value.message
        == "environment variable OPHION_TEST__RETRYS: unknown setting 'test.retrys'"
    )
    assert err.value.hint == "did you mean 'test.retries'?"
    with pytest.raises(ConfigError, match=r"OPHION_TSET__RETRIES: unknown table \[tset\]"):
        _load(tmp_path, "", OPHION_TSET__RETRIES="1")
    with pytest.raises(ConfigError, match="OPHION_TEST__RETRIES: test.retries must be a whole"):
        _load(tmp_path, "", OPHION_TEST__RETRIES="x")
    with pytest.raises(ConfigError, match="test.receivers is an array of tables"):
        _load(tmp_path, "", OPHION_TEST__RECEIVERS="x")


def test_every_registered_section_is_documented() -> None:
    """A table ophiond reads has a docstring under each key and a place in configuration.md."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    for name, cls in config_sections().items():
        assert f"`[{name}]`" in doc, f"docs/configuration.md does not document [{name}]"
        docs = field_docs(cls)
        for key in cls.__dataclass_fields__:
            assert key in docs, f"{cls.__name__}.{key} has no docstring"
            assert f"`{name}.{key}`" in doc, f"docs/configuration.md does not document {name}.{key}"


# ---------------------------------------------------------------------------------------------
# ophiond --check-config


def _check_config(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPHIOND, "--check-config", *flags], capture_output=True, text=True, timeout=60
    )


def test_check_config_passes_a_good_setup_and_starts_nothing(isolated_env: Path) -> None:
    result = _check_config()
    assert (result.returncode, result.stderr) == (0, "")
    assert (
        result.stdout == f"config OK: no config file ({isolated_env / 'config.toml'}), defaults\n"
    )
    assert not isolated_env.exists()
    isolated_env.mkdir()
    (isolated_env / "config.toml").write_text('retention_max_age = "2d"\n')
    result = _check_config("--queue-size", "10")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"config OK: {isolated_env / 'config.toml'}\n"
    assert [p.name for p in isolated_env.iterdir()] == ["config.toml"]  # no data, no state


def test_check_config_reports_a_bad_value_like_a_start(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated_env.mkdir()
    (isolated_env / "config.toml").write_text('retention_max_dsk = "1GB"\n')
    result = _check_config()
    assert (result.returncode, result.stdout) == (2, "")  # main()'s exit code for bad settings
    assert result.stderr == (
        f"ophiond: {isolated_env / 'config.toml'}: unknown setting 'retention_max_dsk' "
        "(did you mean 'retention_max_disk'?)\n"
    )
    (isolated_env / "config.toml").write_text("")
    monkeypatch.setenv("OPHION_SQL_TIMEOUT", "later")  # the environment is checked
    assert _check_config().stderr.startswith("ophiond: sql_timeout: 'later'")
    monkeypatch.delenv("OPHION_SQL_TIMEOUT")
    result = _check_config("--retention-max-age", "forever")  # and the flags
    assert result.returncode == 2
    assert result.stderr.startswith("ophiond: retention_max_age: 'forever' is not a duration")
    assert [p.name for p in isolated_env.iterdir()] == ["config.toml"]
