"""The mesh on a Kafka cluster with SASL_SSL (SCRAM-SHA-512 over TLS) and the
StandardAuthorizer: every role authenticates, and a client without the right
credentials or CA is refused by the cluster."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from blockferry.core.errors import TransportError
from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import ensure_topics
from blockferry.transport.topics import TopicSpec
from tests.e2e.harness import MeshProcesses, make_disk
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.e2e


def security(cluster: KafkaCluster, **changes: object) -> KafkaSecurity:
    prefix = "BLOCKFERRY_KAFKA__SECURITY__"
    env = {k.removeprefix(prefix).lower(): v for k, v in cluster.client_env().items()}
    return KafkaSecurity.model_validate({**env, **changes})


def test_full_incremental_and_restore_over_sasl_ssl(
    secured_kafka: KafkaCluster, topic_prefix: str, tmp_path: Path
) -> None:
    mesh = MeshProcesses(
        secured_kafka.bootstrap, topic_prefix, tmp_path, **secured_kafka.client_env()
    )
    try:
        mesh.up(shards=2)
        disk = make_disk(tmp_path / "vm.img", 4, seed=51)
        full = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")
        assert full["state"] == "success", full
        make_disk(disk, 4, seed=52)
        incremental = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")
        assert (incremental["state"], incremental["parent"]) == ("success", full["restore_point"])
        mesh.assert_restores(incremental["restore_point"], disk)
    finally:
        mesh.close()


def _other_ca(folder: Path) -> Path:
    """A CA the cluster's certificates do not chain to."""
    key, cert = folder / "other.key", folder / "other-ca.crt"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=another-CA"
    subprocess.run(
        [*command.split(), "-keyout", key, "-out", cert], check=True, capture_output=True
    )
    return folder / "other-ca.crt"


@pytest.mark.parametrize("wrong", ["plaintext", "password", "ca"])
def test_a_client_without_the_right_credentials_or_ca_is_refused(
    secured_kafka: KafkaCluster, tmp_path: Path, wrong: str
) -> None:
    """Refused by the cluster: nothing is created, and the error is the transport's."""
    if wrong == "plaintext":
        given = KafkaSecurity()
    elif wrong == "password":
        (tmp_path / "password").write_text("not-the-password")
        given = security(secured_kafka, password_file=tmp_path / "password")
    else:
        given = security(secured_kafka, ca_file=_other_ca(tmp_path))
    spec = TopicSpec(f"refused-{wrong}", 1, {})
    with pytest.raises(TransportError):
        asyncio.run(ensure_topics(secured_kafka.bootstrap, [spec], given))
