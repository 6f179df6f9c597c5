"""A Kafka cluster of three nodes (replication 3, min ISR 2) for the tests of this
directory, started with the local runner like the session's single broker, one per test
module: the tests kill, restart and pause its nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kafka_cluster import KafkaCluster
from tests.system import unavailable

NODES = 3


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Kafka nodes for the tests of one module; killed or paused nodes are
    restarted and resumed by each test (and the cluster stopped at the end)."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka3-", numbered=True), NODES)
    try:
        cluster.up()
    except RuntimeError as exc:
        cluster.down()
        if "java not found" in str(exc) or "maven" in str(exc):
            unavailable(f"cannot start a three-node Kafka here: {exc}")
        raise
    try:
        yield cluster
    finally:
        cluster.down()
