"""The mesh on a Kafka cluster with SASL_SSL (SCRAM-SHA-512 over TLS), the
StandardAuthorizer and the ACLs of ``blockferry acls``: every role authenticates as its
own principal and may do only what its flows need; a client without the right
credentials or CA is refused by the cluster, and a principal's forbidden writes by the
broker's authorizer."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError

from blockferry.core.errors import TransportError
from blockferry.repository.keys import parse_recovery_key, read_key_file
from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import client_options, ensure_topics
from blockferry.transport.topics import Topics, TopicSpec
from tests.e2e.harness import MeshProcesses, make_disk
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.e2e


def security(cluster: KafkaCluster, user: str, **changes: object) -> KafkaSecurity:
    prefix = "BLOCKFERRY_KAFKA__SECURITY__"
    env = {k.removeprefix(prefix).lower(): v for k, v in cluster.client_env(user).items()}
    return KafkaSecurity.model_validate({**env, **changes})


def test_full_incremental_and_restore_with_a_principal_per_role(
    secured_kafka: KafkaCluster, topic_prefix: str, tmp_path: Path
) -> None:
    """Each role process authenticates as blockferry-<role>, allowed only its ACLs."""
    secured_kafka.apply_acls(topic_prefix, "--repository=default")
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
        token = tmp_path / "operator.token"
        mesh.cli("users", "add", "otto", "--role", "operator", "--token-file", str(token))
        assert_no_secret_leaked(secured_kafka, mesh, topic_prefix)
    finally:
        mesh.close()


def _forms(secret: bytes) -> list[bytes]:
    """A secret as it could leak: raw, hex and base64."""
    return [secret, secret.hex().encode(), base64.b64encode(secret)]


def _secrets(cluster: KafkaCluster, mesh: MeshProcesses) -> dict[str, list[bytes]]:
    """Every secret of the run, by what it is, in every form it could leak in."""
    security = cluster.data_dir / "security"
    found = {
        f"SCRAM password {p.stem}": p.read_bytes().strip() for p in security.glob("*.password")
    }
    for pem in security.glob("*.key"):
        der = base64.b64decode("".join(pem.read_text().splitlines()[1:-1]))
        found[f"TLS private key {pem.name}"] = der
    found["API token of admin"] = (mesh.workdir / "api-token").read_bytes().strip()
    found["API token of otto"] = (mesh.workdir / "operator.token").read_bytes().strip()
    repository = mesh.open_repository()
    found["dedupe key"] = repository.config.dedupe_key
    found["repository key file"] = read_key_file(mesh.key_file)
    found["repository master key"] = parse_recovery_key(repository.recovery_key())
    forms = {what: _forms(secret) for what, secret in found.items()}
    for pem in security.glob("*.key"):  # a PEM's own lines, as a log would quote it
        forms[f"TLS private key {pem.name}"] += [
            line.encode() for line in pem.read_text().splitlines()[1:-1] if len(line) >= 40
        ]
    return forms


def _topic_contents(cluster: KafkaCluster, prefix: str) -> dict[str, bytes]:
    """The keys and values of every record on every topic of the mesh, raw."""

    options = client_options(security(cluster, "admin"))

    async def read() -> dict[str, bytes]:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, **options)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(f"{prefix}.")]
            partitions = [
                TopicPartition(t["topic"], p["partition"])
                for t in await admin.describe_topics(topics)
                for p in t["partitions"]
            ]
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=cluster.bootstrap, enable_auto_commit=False, **options
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            contents = dict.fromkeys(topics, b"")
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    contents[tp.topic] += b"".join(
                        (r.key or b"") + b"\0" + (r.value or b"") for r in records
                    )
            return contents
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _command_lines() -> dict[str, bytes]:
    lines = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines[f"/proc/{proc.name}/cmdline"] = (proc / "cmdline").read_bytes()
            except OSError:  # ended meanwhile
                pass
    return lines


def assert_no_secret_leaked(cluster: KafkaCluster, mesh: MeshProcesses, prefix: str) -> None:
    """No SCRAM password, TLS private key, API token or dedupe key, raw, hex or base64,
    in any log (the roles', the brokers'), any record of the mesh's topics, or any
    process's command line."""
    haystacks = _command_lines()
    logs = [*mesh.workdir.glob("*.log"), *cluster.data_dir.glob("node-*/**/*.log")]
    assert any("server.log" in str(p) for p in logs) and any("target-mover" in str(p) for p in logs)
    haystacks |= {str(path): path.read_bytes() for path in logs}
    contents = _topic_contents(cluster, prefix)
    assert f"{prefix}.default.chunks" in contents and f"{prefix}.repositories" in contents
    haystacks |= {f"topic {topic}": data for topic, data in contents.items()}
    leaks = [
        f"{what} in {where}"
        for what, forms in _secrets(cluster, mesh).items()
        for where, data in haystacks.items()
        if any(form in data for form in forms)
    ]
    assert not leaks, "\n".join(leaks)


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
        given = security(secured_kafka, "admin", password_file=tmp_path / "password")
    else:
        given = security(secured_kafka, "admin", ca_file=_other_ca(tmp_path))
    spec = TopicSpec(f"refused-{wrong}", 1, {})
    with pytest.raises(TransportError):
        asyncio.run(ensure_topics(secured_kafka.bootstrap, [spec], given))


async def _produce_as(cluster: KafkaCluster, user: str, topic: str) -> None:
    """One record to ``topic`` as ``user``, through a plain Kafka producer: what is
    refused is refused by the broker, not by blockferry's client."""
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap,
        enable_idempotence=True,
        request_timeout_ms=20000,
        **client_options(security(cluster, user)),
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"forged", key=b"forged")
    finally:
        await producer.stop()


FORBIDDEN = [
    ("blockferry-source-mover", "tasks"),
    ("blockferry-source-mover", "task-control"),
    ("blockferry-target-mover", "guest-commands"),
    ("blockferry-source-mover", "default.commands"),
    ("blockferry-source-mover", "default.index"),
    ("blockferry-dedupe-index", "default.restore"),
    ("blockferry-guest-proxy", "jobs"),
    ("blockferry-source-mover", "other.chunks"),
    ("blockferry-target-mover", "other.index"),
    ("blockferry-orchestrator", "other.commands"),
]
"""A principal and a topic (after the prefix) it must not write: another role's, or
one of a repository it was not given (``other``)."""


def test_a_principal_s_forbidden_writes_are_denied_by_the_broker(
    secured_kafka: KafkaCluster, topic_prefix: str
) -> None:
    secured_kafka.apply_acls(topic_prefix, "--repository=default")
    topics = Topics(topic_prefix)
    names = [t.name for t in topics.shared_specs(1)]
    names += [t.name for r in ("default", "other") for t in topics.repository_specs(r, 1, 3600000)]
    admin = security(secured_kafka, "admin")
    asyncio.run(ensure_topics(secured_kafka.bootstrap, [TopicSpec(n, 1) for n in names], admin))

    # the same principals write the topics they own: the denials below are about rights
    for user, topic in [
        ("blockferry-source-mover", "default.chunks"),
        ("blockferry-target-mover", "default.index"),
        ("blockferry-orchestrator", "tasks"),
    ]:
        asyncio.run(_produce_as(secured_kafka, user, f"{topic_prefix}.{topic}"))
    for user, topic in FORBIDDEN:
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_produce_as(secured_kafka, user, f"{topic_prefix}.{topic}"))
