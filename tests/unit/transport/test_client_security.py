"""The Kafka security settings and the client options they become (no broker needed:
the cluster side is tests/e2e/test_secured_mesh.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from blockferry.core.errors import ConfigError
from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import client_options, librdkafka_options


def test_plaintext_adds_nothing() -> None:
    assert client_options(None) == {}
    assert client_options(KafkaSecurity()) == {}


def test_sasl_ssl_reads_the_password_from_its_file_when_a_client_is_made(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("first\n")
    security = KafkaSecurity(protocol="SASL_SSL", username="mover", password_file=password)
    options = client_options(security)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "mover")
    assert options["sasl_plain_password"] == "first"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname
    password.write_text("second\n")  # a rotated secret: the next client uses it
    assert client_options(security)["sasl_plain_password"] == "second"


def test_a_missing_password_file_is_a_clear_error(tmp_path: Path) -> None:
    gone = tmp_path / "nowhere"
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", username="u", password_file=gone)
    with pytest.raises(ConfigError, match=f"reading the Kafka password file {gone}"):
        client_options(security)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"protocol": "SASL_SSL"}, "SASL_SSL needs a username and a password_file"),
        ({"protocol": "SSL", "cert_file": "c.pem"}, "a client certificate needs its key"),
        ({"protocol": "TLS"}, "PLAINTEXT"),
    ],
)
def test_incomplete_settings_are_refused(fields: dict[str, str], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        KafkaSecurity.model_validate(fields)


def test_role_placeholders_give_each_role_its_own_principal(tmp_path: Path) -> None:
    security = KafkaSecurity(
        protocol="SASL_SSL",
        username="blockferry-{role}",
        password_file=tmp_path / "{role}.password",
    )
    mover = security.for_role("source-mover")
    assert mover.username == "blockferry-source-mover"
    assert mover.password_file == tmp_path / "source-mover.password"
    assert security.for_role("orchestrator").username == "blockferry-orchestrator"


def test_librdkafka_options_carry_the_same_settings(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n")
    security = KafkaSecurity(
        protocol="SASL_SSL",
        username="admin",
        password_file=password,
        ca_file=tmp_path / "ca.crt",
        check_hostname=False,
    )
    assert librdkafka_options(security) == {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(tmp_path / "ca.crt"),
        "ssl.endpoint.identification.algorithm": "none",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "admin",
        "sasl.password": "secret",
    }
    assert librdkafka_options(KafkaSecurity()) == {}
