"""Every role's log as JSON lines (BLOCKFERRY_LOG_FORMAT=json), for log pipelines: each
line one object, and the lines about a backup carry its session, job and disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MeshProcesses, make_disk

pytestmark = pytest.mark.e2e


def test_the_lines_of_a_backup_carry_its_session_job_and_disk(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_LOG_FORMAT"] = "json"
    mesh.env["BLOCKFERRY_LOG_LEVEL"] = "DEBUG"
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 8, seed=61)
    session = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "root", "--wait")
    assert session["state"] == "success", session

    about: dict[str, list[dict[str, Any]]] = {}
    for role in mesh.roles:
        lines = [json.loads(line) for line in mesh.log(role).splitlines() if line.strip()]
        assert lines, f"{role} logged nothing"
        assert all({"time", "level", "logger", "message"} <= set(x) for x in lines), role
        about[role] = [x for x in lines if x["session"] == session["session"]]
    for role in ("orchestrator", "source-mover", "target-mover"):
        assert about[role], f"no line of the {role} is about the session"
        assert {x["job"] for x in about[role]} <= {"vm", None}
    assert any(x["disk"] == "root" and x["job"] == "vm" for x in about["source-mover"])
    assert any(x["disk"] == "root" and x["job"] == "vm" for x in about["target-mover"])
