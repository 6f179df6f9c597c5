"""Settings: defaults, environment overrides with nesting, YAML files, validation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from blockferry.cli import main
from blockferry.core.errors import ConfigError
from blockferry.gateway.settings import GatewaySettings
from blockferry.source_mover.settings import SourceMoverSettings
from blockferry.target_mover.settings import TargetMoverSettings


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_defaults() -> None:
    settings = TargetMoverSettings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.topic_prefix == "blockferry"
    assert settings.repositories() == {"default": str(Path(".blockferry") / "repository")}


def test_environment_nests_with_double_underscore() -> None:
    with environment(
        BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS="broker-a:9092,broker-b:9092",
        BLOCKFERRY_SOURCE_MOVER__WORKERS="4",
        BLOCKFERRY_TARGET_MOVER__REPOSITORIES='{"a": "/srv/a"}',
    ):
        assert SourceMoverSettings().kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
        assert SourceMoverSettings().source_mover.workers == 4
        assert TargetMoverSettings().repositories() == {"a": "/srv/a"}


def test_the_gateway_names_its_repositories_by_location() -> None:
    with pytest.raises(ConfigError, match="BLOCKFERRY_GATEWAY__REPOSITORIES"):
        GatewaySettings().repositories()
    with environment(
        BLOCKFERRY_GATEWAY__REPOSITORIES='{"offsite": "s3://backups/site-a?endpoint=http://s3:9000"}'
    ):
        assert GatewaySettings().repositories() == {
            "offsite": "s3://backups/site-a?endpoint=http://s3:9000"
        }


def test_yaml_file_below_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "blockferry.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"topic_prefix": "site1"}, "http": {"port": 9100}}))
    with environment(BLOCKFERRY_CONFIG_FILE=str(config), BLOCKFERRY_HTTP__PORT="9200"):
        settings = SourceMoverSettings()
    assert settings.kafka.topic_prefix == "site1"
    assert settings.http.port == 9200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BLOCKFERRY_SOURCE_MOVER__WORKERS", "0"),
        ("BLOCKFERRY_KAFKA__TOPIC_PREFIX", "bad prefix!"),
        ("BLOCKFERRY_HTTP__PORT", "70000"),
    ],
)
def test_invalid_values_are_rejected(name: str, value: str) -> None:
    with environment(**{name: value}), pytest.raises(ValidationError):
        SourceMoverSettings()


def test_config_command_prints_effective_settings_and_defaults() -> None:
    runner = CliRunner(env={"BLOCKFERRY_SOURCE_MOVER__IN_FLIGHT": "8"})
    effective = yaml.safe_load(runner.invoke(main, ["config", "source-mover"]).output)
    assert effective["source_mover"]["in_flight"] == 8
    assert "target_mover" not in effective
    defaults = yaml.safe_load(runner.invoke(main, ["config", "--print-defaults"]).output)
    assert defaults["source_mover"]["in_flight"] == 32
    assert defaults["dedupe_index"]["store_map_size_gib"] == 64
    assert defaults["target_mover"]["pack_size"] == 32 * 1024 * 1024
    assert defaults["orchestrator"]["lease_seconds"] == 30


def test_config_command_rejects_unknown_roles() -> None:
    result = CliRunner().invoke(main, ["config", "dedupe"])
    assert result.exit_code == 1
    assert "unknown role dedupe" in result.output


def test_config_check_names_what_no_role_reads(tmp_path: Path) -> None:
    """A misspelt key is otherwise ignored: each role reads only its own sections."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"topic_prefix": "bf", "security": {"protocol": "SSL", "ca_fle": "x"}},
                "gateway": {"repositories": {"offsite": "s3://b/p"}},
                "source_mover": {"workers": 3},
                "sorce_mover": {"workers": 3},
            }
        )
    )
    env = {
        "BLOCKFERRY_CONFIG_FILE": str(config),
        "BLOCKFERRY_TARGET_MOVER__REPOSITORIES__DEFAULT": "/srv/repo",  # a map's own key
        "BLOCKFERRY_HTTP__HOST": "0.0.0.0",
        "BLOCKFERRY_API_URL": "https://orchestrator:8080",  # the CLI's
        "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVER": "kafka:9092",
    }
    result = CliRunner(env=env).invoke(main, ["config", "--check"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: BLOCKFERRY_KAFKA__BOOTSTRAP_SERVER: no role reads it",
        f"{config}: kafka.security.ca_fle: no role reads it",
        f"{config}: sorce_mover: no role reads it",
    ]
    del env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVER"]
    config.write_text(yaml.safe_dump({"kafka": {"topic_prefix": "bf"}}))
    assert CliRunner(env=env).invoke(main, ["config", "--check"]).exit_code == 0


def test_config_check_refuses_a_value_that_does_not_hold() -> None:
    env = {"BLOCKFERRY_SOURCE_MOVER__IN_FLIGHT": "many"}
    result = CliRunner(env=env).invoke(main, ["config", "--check", "source-mover"])
    assert result.exit_code == 1
    assert "the settings of the source-mover" in result.output
    assert "in_flight" in result.output
