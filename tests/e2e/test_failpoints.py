"""Roles killed at their failpoints (real SIGKILL, every role its own process): the work
they were doing is done by the role started again."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.harness import MeshProcesses, make_disk


def test_a_target_mover_killed_in_the_middle_of_a_commit_commits_when_started_again(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """The commit command was taken (at most once) by the owner that died; the new owner
    announces itself and the orchestrator asks it again, instead of waiting for hours."""
    mesh = mesh_processes
    hits = tmp_path / "failpoints.log"
    mesh.env["BLOCKFERRY_FAILPOINT_LOG"] = str(hits)
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 4, seed=41)
    mesh.kill("target-mover", signal.SIGTERM)
    armed = mesh.start("target-mover", BLOCKFERRY_FAILPOINTS='["commit.indexes-written"]')

    session = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d")["session"]
    assert armed.wait(timeout=120) == -signal.SIGKILL
    assert "commit.indexes-written" in hits.read_text().splitlines()[-1]
    mesh.processes.pop("target-mover")
    mesh.start("target-mover")

    document = mesh.follow(session, timeout=90)
    assert document["state"] == "success", (document, mesh.log("orchestrator")[-3000:])
    mesh.assert_restores(document["restore_point"], disk)
    leftovers = list((mesh.repository / "restorepoints" / "j").glob(".tmp-*"))
    assert leftovers == [], "the owner started again removed the killed attempt's directory"
