"""An orchestrator killed mid-session carries the session on when it starts again: the
state is on the compacted sessions topic, every transition on the session-events topic."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.e2e.harness import MeshProcesses, make_disk


def test_an_orchestrator_killed_mid_session_carries_it_on(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "2")
    mesh.start("target-mover")
    mesh.start("orchestrator")
    # slow enough that the mover is still at it when the orchestrator is back
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="2")
    disk = make_disk(tmp_path / "vm.img", 32, seed=31)

    started = mesh.cli_json("backup", str(disk), "--disk", "d0")
    session_id = started["session"]
    deadline = time.monotonic() + 60
    while True:
        session: dict[str, Any] = mesh.api("GET", f"/api/v1/sessions/{session_id}").json()
        if session["blocks_done"] >= session["blocks_total"] // 4 > 0:
            break
        assert time.monotonic() < deadline, session
        time.sleep(0.1)
    mesh.kill("orchestrator", signal.SIGKILL)
    time.sleep(1)
    mesh.start("orchestrator")

    document = mesh.follow(session_id, timeout=120)
    assert document["state"] == "success", (document, mesh.log("orchestrator")[-3000:])
    (task,) = document["tasks"]
    assert task["state"] == "success"
    assert task["counters"]["blocks_resumed"] == 0, "the mover carried on; nothing was re-offered"
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", document["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()

    events = mesh.session_events(session_id)
    assert events == [
        ("", "pending"),
        ("", "transferring"),
        ("d0", "transferring"),
        ("d0", "success"),
        ("", "committing"),
        ("", "success"),
    ], events

    # ended sessions are kept too
    mesh.kill("orchestrator", signal.SIGTERM)
    mesh.start("orchestrator")
    listed = [s["id"] for s in mesh.api("GET", "/api/v1/sessions").json()]
    assert session_id in listed


def test_sessions_older_than_the_history_are_forgotten_but_each_jobs_newest_stays(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_ORCHESTRATOR__SESSION_HISTORY_DAYS"] = str(3 / 86400)  # 3 s
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 1, seed=32)
    old_a = mesh.cli_json("backup", str(disk), "--job", "a", "--disk", "d", "--wait")
    only_b = mesh.cli_json("backup", str(disk), "--job", "b", "--disk", "d", "--wait")
    time.sleep(3.5)
    new_a = mesh.cli_json("backup", str(disk), "--job", "a", "--disk", "d", "--wait")

    def listed() -> list[str]:
        return [s["id"] for s in mesh.api("GET", "/api/v1/sessions").json()]

    assert listed() == [only_b["session"], new_a["session"]], "a's older session is forgotten"
    mesh.kill("orchestrator", signal.SIGKILL)
    mesh.start("orchestrator")
    assert listed() == [only_b["session"], new_a["session"]], "and stays forgotten"
    assert old_a["restore_point"] in [
        p["id"] for p in mesh.cli_json("restore-points", "--job", "a")["restore_points"]
    ], "forgetting a session keeps its restore point"
