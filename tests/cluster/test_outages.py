"""Backups through the mesh (every role its own process) on three Kafka nodes while
nodes die, leaders move and the whole cluster is unreachable for longer than the
request timeout: no role process exits, the session ends cleanly and a committed
restore point restores byte for byte."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ROLES, MeshProcesses, make_disk
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.kafka

REQUEST_TIMEOUT_MS = 15000
ENDED = ("success", "warning", "failed", "cancelled")


@pytest.fixture
def mesh(kafka_cluster: KafkaCluster, topic_prefix: str, tmp_path: Path) -> Iterator[MeshProcesses]:
    mesh = MeshProcesses(
        kafka_cluster.bootstrap,
        topic_prefix,
        tmp_path,
        BLOCKFERRY_KAFKA__REQUEST_TIMEOUT_MS=str(REQUEST_TIMEOUT_MS),
    )
    try:
        yield mesh
    finally:
        kafka_cluster.resume()
        kafka_cluster.up()  # nodes a failed test left down
        mesh.close()


def start_slow_mesh(mesh: MeshProcesses, read_limit_mib_s: int = 2) -> None:
    mesh.init_repository("--block-size", "256", "--shards", "2")
    for role in ROLES:
        env = {"BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S": str(read_limit_mib_s)}
        mesh.start(role, wait=False, **(env if role == "source-mover" else {}))
    for role in ROLES:
        mesh.wait_ready(role)


def assert_every_role_runs(mesh: MeshProcesses) -> None:
    exited = {name: p.returncode for name, p in mesh.processes.items() if p.poll() is not None}
    assert not exited, {name: mesh.log(name)[-3000:] for name in exited}


def test_the_local_runner_keeps_two_of_three_copies_in_sync(kafka_cluster: KafkaCluster) -> None:
    """Topics Kafka creates itself (consumer offsets, transactions) take the broker's
    defaults: three copies, and a write acknowledged by two."""
    for node in (1, 2, 3):
        assert kafka_cluster.broker_config(node, "min.insync.replicas") == "2"
        assert kafka_cluster.broker_config(node, "default.replication.factor") == "3"
        assert kafka_cluster.broker_config(node, "offsets.topic.replication.factor") == "3"


def test_a_node_killed_mid_backup_and_restarted(
    kafka_cluster: KafkaCluster, mesh: MeshProcesses, tmp_path: Path
) -> None:
    start_slow_mesh(mesh)
    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]
    for topic in (f"{prefix}.sessions", f"{prefix}.default.chunks"):
        assert kafka_cluster.replication(topic) == (3, "2"), topic
    leaders = kafka_cluster.leaders(f"{prefix}.sessions")
    for leader in leaders.values():
        assert leader > 0, leaders
    disk = make_disk(tmp_path / "vm.img", 16, seed=41)
    session_id = mesh.cli_json("backup", str(disk), "--disk", "d0")["session"]
    mesh.wait_for_progress(session_id, 0.25)
    victim = leaders[0]  # the leader of a partition the orchestrator writes
    kafka_cluster.stop(victim, signal.SIGKILL)
    time.sleep(5)  # the session goes on with two of three nodes (min ISR 2)
    kafka_cluster.up()

    document = mesh.follow(session_id)
    assert document["state"] == "success", (document, mesh.log("orchestrator")[-3000:])
    assert_every_role_runs(mesh)
    mesh.assert_restores(document["restore_point"], disk)


def test_leaders_moved_mid_backup(
    kafka_cluster: KafkaCluster, mesh: MeshProcesses, tmp_path: Path
) -> None:
    start_slow_mesh(mesh)
    chunks = f"{mesh.env['BLOCKFERRY_KAFKA__TOPIC_PREFIX']}.default.chunks"
    before = kafka_cluster.leaders(chunks)
    disk = make_disk(tmp_path / "vm.img", 16, seed=42)
    session_id = mesh.cli_json("backup", str(disk), "--disk", "d0")["session"]
    mesh.wait_for_progress(session_id, 0.2)
    # a controlled shutdown hands the node's leaderships to the others ...
    moved = before[0]
    kafka_cluster.stop(moved, signal.SIGTERM)
    during = kafka_cluster.leaders(chunks)
    assert during[0] not in (moved, -1), (before, during)
    kafka_cluster.up()
    # ... and a preferred leader election hands them back once it is up again
    kafka_cluster.elect_preferred_leaders()
    assert kafka_cluster.leaders(chunks) == before

    document = mesh.follow(session_id)
    assert document["state"] == "success", (document, mesh.log("orchestrator")[-3000:])
    assert_every_role_runs(mesh)
    mesh.assert_restores(document["restore_point"], disk)


def test_the_whole_cluster_unreachable_for_longer_than_the_request_timeout(
    kafka_cluster: KafkaCluster, mesh: MeshProcesses, tmp_path: Path
) -> None:
    start_slow_mesh(mesh)
    disk = make_disk(tmp_path / "vm.img", 16, seed=43)
    session_id = mesh.cli_json("backup", str(disk), "--disk", "d0")["session"]
    mesh.wait_for_progress(session_id, 0.25)
    kafka_cluster.pause()
    try:
        time.sleep(REQUEST_TIMEOUT_MS / 1000 + 10)
        assert_every_role_runs(mesh)
    finally:
        kafka_cluster.resume()

    document = mesh.follow(session_id, timeout=180)
    assert document["state"] in ENDED, document
    assert_every_role_runs(mesh)
    if document["restore_point"]:
        mesh.assert_restores(document["restore_point"], disk)
    # the mesh works on: a second backup after the outage succeeds
    again = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")
    assert again["state"] == "success", again
