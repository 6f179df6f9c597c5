"""A task offered again while its mover is still at it (every role its own process): the
mover runs one attempt of a task at a time, so two attempts never wait for the same
replies, and the session ends."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from blockferry.transport.records import Task
from tests.e2e.harness import MeshProcesses, make_disk

LEASE_SECONDS = 5


def wait_for_log(mesh: MeshProcesses, role: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in mesh.log(role):
        assert time.monotonic() < deadline, (text, mesh.log(role)[-3000:])
        time.sleep(0.2)


def test_a_mover_paused_past_its_lease_runs_the_newer_attempt_alone(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """The mover is paused longer than the lease (a Kafka outage longer than the lease
    does the same), so the orchestrator offers the task again. Once resumed, the mover
    stops its attempt 0 and runs attempt 1, which resumes where the target side holds the
    disk; attempt 1 read a second time (its offset not committed before a rebalance) is
    not started twice. Before, both attempts ran side by side and one could take the
    other's reply, leaving the session waiting for ever."""
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_ORCHESTRATOR__LEASE_SECONDS"] = str(LEASE_SECONDS)
    mesh.env["BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S"] = "2"
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 24, seed=44)
    session = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d")["session"]
    mesh.wait_for_progress(session, 0.2)

    mover = mesh.processes["source-mover"].pid
    os.kill(mover, signal.SIGSTOP)
    try:
        time.sleep(LEASE_SECONDS + 3)  # within the group's session timeout (10 s)
    finally:
        os.kill(mover, signal.SIGCONT)
    wait_for_log(mesh, "source-mover", "offered again (attempt 1); stopping attempt 0 here")

    offers = [r for r in mesh.records("tasks") if r.key == f"{session}/d".encode()]
    assert [r.value.attempt for r in offers if isinstance(r.value, Task)] == [0, 1]
    assert offers[-1].value is not None
    mesh.produce("tasks", offers[-1].value, offers[-1].key)
    wait_for_log(mesh, "source-mover", "attempt 1 is under way here already")

    document = mesh.follow(session, timeout=120)
    assert document["state"] == "success", (document, mesh.log("source-mover")[-3000:])
    mesh.assert_restores(document["restore_point"], disk)
