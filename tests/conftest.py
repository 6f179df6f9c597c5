"""Shared pytest fixtures.

Kafka: one broker per test session, shared by every test that asks for it; each test
names its topics (and consumer groups) with its own ``topic_prefix``. The broker is only
started when a test requests ``kafka_bootstrap``, so unit tests never pay for it.

Set ``BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS`` to use an already running cluster instead
(e.g. ``make kafka-up`` and then ``BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``).

S3: one real MinIO server on 127.0.0.1 per test session (``tests/minio.py``), started
only when a test requests ``minio``.

SMB: one real Samba server on 127.0.0.1 per test session (``tests/samba.py``), started
only when a test requests ``samba``.

SSH: one real OpenSSH server on 127.0.0.1 per test session, with its own host key and a
client key of its own (``tests/sshd.py``), started only when a test requests ``sshd``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.kafka_cluster import KafkaCluster
from tests.minio import MinioServer, running_minio
from tests.samba import SambaServer, running_samba
from tests.sshd import SshdUnavailable, SshServer, check_available, running_sshd
from tests.system import unavailable

BOOTSTRAP_ENV = "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"
# Per attempt; the second attempt (loaded machine) gets more time.
START_TIMEOUTS_S = (90, 150)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("host:port,...") of a Kafka cluster shared by the session."""
    configured = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        yield configured
        return

    errors: list[str] = []
    for attempt, timeout_s in enumerate(START_TIMEOUTS_S, start=1):
        # fresh directory and ports for every attempt
        cluster = KafkaCluster(tmp_path_factory.mktemp(f"kafka-{attempt}-", numbered=True))
        try:
            bootstrap = cluster.up(timeout_s)
        except RuntimeError as e:
            errors.append(f"attempt {attempt}: {e}")
            cluster.down()
            continue
        try:
            yield bootstrap
        finally:
            cluster.down()
        return
    pytest.fail("could not start Kafka for the tests:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A Kafka cluster of its own with SASL_SSL and the StandardAuthorizer (kafka.sh
    --security sasl_ssl); ``client_env()`` gives a client's security settings."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-secured-"), security="sasl_ssl")
    try:
        cluster.up(START_TIMEOUTS_S[-1])
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def topic_prefix() -> str:
    """Unique per test: name topics and consumer groups f"{topic_prefix}.something"."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """One MinIO server for the session; each test makes buckets of its own."""
    with running_minio(tmp_path_factory.mktemp("minio")) as server:
        yield server


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    """One smbd for the session; each test works under a prefix of its own."""
    with running_samba(tmp_path_factory.mktemp("samba")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the session; tests log in as the user running them."""
    try:
        check_available()
    except SshdUnavailable as exc:
        unavailable(f"no SSH server to test against: {exc}")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
