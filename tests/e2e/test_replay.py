"""Consumer groups deleted and made again mid-life (offsets lost: the roles read their
topics from the start): the old restore task and the old prune are read again, refused as
expired, and nothing runs again."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.harness import MeshProcesses, make_disk
from tests.kafka_cluster import KAFKA_SH


def delete_groups(bootstrap: str, groups: list[str], logs: Path) -> None:
    """Delete consumer groups as an operator does (Kafka's ConsumerGroupCommand)."""
    lib = KAFKA_SH.parent / "target" / "lib"
    for group in groups:
        deleted = subprocess.run(
            [
                "java",
                "-Xmx128m",
                "-cp",
                f"{lib}/*",
                f"-Dlog4j2.configurationFile={KAFKA_SH.parent / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={logs}",
                "-Dblockferry.log.file=tools.log",
                "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                "--bootstrap-server",
                bootstrap,
                "--delete",
                "--group",
                group,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr


def listed_ids(mesh: MeshProcesses) -> list[str]:
    listed = mesh.cli_json("restore-points", "--job", "j")
    return sorted(rp["id"] for rp in listed["restore_points"])


def test_a_role_whose_group_lost_its_offsets_runs_no_old_work_again(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_KAFKA__CLOCK_SKEW_S"] = "0"
    mesh.env["BLOCKFERRY_ORCHESTRATOR__LEASE_SECONDS"] = "5"
    mesh.env["BLOCKFERRY_ORCHESTRATOR__COMMAND_TIMEOUT_S"] = "15"
    mesh.up(shards=1)
    disk = make_disk(tmp_path / "vm.img", 2, seed=46)
    mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")
    make_disk(disk, 2, seed=47)
    second = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", second["restore_point"], "--to", str(restored))
    restored.unlink()
    mesh.cli_json("prune", "--job", "j", "--keep-last", "1")
    assert listed_ids(mesh) == [second["restore_point"]]
    third = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")

    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]
    for role in ("source-mover", "target-mover"):
        mesh.kill(role, signal.SIGTERM)
    time.sleep(16)  # past every old task's and command's expiry
    groups = ["source-mover", "default.owner", "default.owner-requests"]
    delete_groups(
        mesh.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"], [f"{prefix}.{g}" for g in groups], tmp_path
    )
    for role in ("target-mover", "source-mover"):
        mesh.start(role)

    deadline = time.monotonic() + 60
    while not re.search(r"command prune \(\w+\): expired at", mesh.log("target-mover")):
        assert time.monotonic() < deadline, mesh.log("target-mover")[-3000:]
        time.sleep(0.5)
    deadline = time.monotonic() + 60
    while mesh.log("source-mover").count("expired at") < 4:  # 3 backups, 1 restore
        assert time.monotonic() < deadline, mesh.log("source-mover")[-3000:]
        time.sleep(0.5)
    assert not restored.exists(), "the old restore ran again"
    listed = mesh.cli_json("restore-points", "--job", "j")
    ids = sorted(rp["id"] for rp in listed["restore_points"])
    assert ids == sorted([second["restore_point"], third["restore_point"]]), (
        "the old prune ran again"
    )
