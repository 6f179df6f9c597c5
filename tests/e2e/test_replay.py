"""Old work read again is never done again: consumer groups deleted and made again
mid-life (offsets lost: the roles read their topics from the start) read the old restore
task, prune and freeze again and refuse them as expired; a task an earlier run of its
session sent, read late, is refused as superseded."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from blockferry.transport import expiry
from blockferry.transport.records import Task
from tests.e2e.harness import MeshProcesses, make_disk
from tests.e2e.test_guest_processing import (
    guest_job,
    lines,
    run_job,
    stamp,
    start_guest_mesh,
    start_guest_proxy,
)
from tests.kafka_cluster import KAFKA_SH
from tests.sshd import SshServer

pytestmark = pytest.mark.e2e


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


def wait_for_log(mesh: MeshProcesses, role: str, pattern: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, mesh.log(role)):
        assert time.monotonic() < deadline, mesh.log(role)[-3000:]
        time.sleep(0.5)


@pytest.mark.ssh
def test_a_guest_proxy_whose_group_lost_its_offsets_freezes_no_guest_again(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    """The guest-proxy reads the old freeze again and refuses it as expired; the old thaw
    finds the guest thawed and runs no post-thaw script again."""
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_KAFKA__CLOCK_SKEW_S"] = "0"
    start_guest_mesh(mesh, sshd, BLOCKFERRY_ORCHESTRATOR__GUEST_ANSWER_MARGIN_S="3")
    sda = make_disk(tmp_path / "db-sda.img", 2, seed=48)
    log = tmp_path / "guest.log"
    definition = guest_job(
        "app",
        {"sda": sda},
        sshd,
        guest_processing={
            "pre_freeze": stamp(sda, "FROZEN!!", log),
            "post_thaw": stamp(sda, "THAWED!!", log),
            "freeze_limit_s": 2,
        },
    )
    session = run_job(mesh, definition)
    assert session["state"] == "success", session
    assert lines(log) == ["FROZEN!!", "THAWED!!"]

    mesh.kill("guest-proxy", signal.SIGTERM)
    time.sleep(6)  # past the freeze's expiry: its limit and the answer margin
    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]
    delete_groups(
        mesh.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"], [f"{prefix}.guest-proxy"], tmp_path
    )
    start_guest_proxy(mesh, sshd)

    wait_for_log(mesh, "guest-proxy", r"command freeze \(\w+\): expired at")
    wait_for_log(mesh, "guest-proxy", r"already thawed|thawed itself|never began")
    assert lines(log) == ["FROZEN!!", "THAWED!!"], "no script ran again"


def test_a_task_an_earlier_run_of_its_session_sent_is_refused(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """An orchestrator restarted mid-backup carries the session on as its second run; once
    the mover has read the second run's task, the first run's task read again is refused
    (not run: its session is over, and nothing of it starts)."""
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_KAFKA__CLOCK_SKEW_S"] = "0"
    mesh.env["BLOCKFERRY_ORCHESTRATOR__LEASE_SECONDS"] = "5"
    mesh.init_repository("--block-size", "256", "--shards", "2")
    mesh.start("target-mover")
    mesh.start("orchestrator")
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="2")
    disk = make_disk(tmp_path / "vm.img", 16, seed=49)
    session_id = mesh.cli_json("backup", str(disk), "--disk", "d0")["session"]
    deadline = time.monotonic() + 60
    while mesh.api("GET", f"/api/v1/sessions/{session_id}").json()["blocks_done"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    mesh.kill("source-mover", signal.SIGKILL)
    mesh.kill("orchestrator", signal.SIGKILL)
    mesh.start("orchestrator")  # follows attempt 0, then offers attempt 1 as run 2
    mesh.start("source-mover")

    document = mesh.follow(session_id, timeout=120)
    assert document["state"] == "success", (document, mesh.log("orchestrator")[-3000:])
    assert mesh.api("GET", f"/api/v1/sessions/{session_id}").json()["epoch"] == 2
    mesh.assert_restores(document["restore_point"], disk)

    offers = [r for r in mesh.records("tasks") if r.key == f"{session_id}/d0".encode()]
    first = [r.value for r in offers if isinstance(r.value, Task) and r.value.epoch == 1]
    assert [task.attempt for task in first] == [0]
    late = first[0].model_copy(update=expiry.stamp(60))  # read late, within its time
    mesh.produce("tasks", late, f"{session_id}/d0".encode())
    wait_for_log(
        mesh,
        "source-mover",
        rf"attempt 0: sent by run 1 of session {session_id}, which run 2 replaced: not done",
    )
    refused = 'blockferry_source_mover_tasks_refused_total{reason="superseded"} 1.0'
    assert refused in mesh.metrics("source-mover")
