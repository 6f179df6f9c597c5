"""Releases side by side: one role still runs the previous release's schema of a
compatible change (Task before its ``epoch`` field) while the others run this one; and
the state an older orchestrator kept is read by this one."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

import blockferry
from blockferry.orchestrator.state import StoredJob
from blockferry.transport.records import JobDefinition, SessionRecord, Task
from tests.e2e.harness import MeshProcesses, make_disk

pytestmark = pytest.mark.e2e

PREVIOUS_TASK = "Task.v5.avsc"
"""The Task schema of the release before ``epoch``."""


def previous_release(into: Path) -> Path:
    """This package as the previous release had it: writing Task records with the
    previous Task schema, and not knowing this release's (a path for PYTHONPATH)."""
    package = into / "blockferry"
    shutil.copytree(Path(blockferry.__file__).parent, package, symlinks=False)
    schemas = package / "transport" / "schemas"
    (schemas / "Task.avsc").write_bytes((schemas / "history" / PREVIOUS_TASK).read_bytes())
    (schemas / "history" / PREVIOUS_TASK).unlink()
    return into


def test_an_orchestrator_of_the_previous_schema_runs_with_movers_of_this_one(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "2")
    for role in ("target-mover", "dedupe-index", "source-mover"):
        mesh.start(role)
    mesh.start("orchestrator", PYTHONPATH=str(previous_release(tmp_path / "previous")))
    disk = make_disk(tmp_path / "vm.img", 4, seed=50)

    backup = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")

    assert backup["state"] == "success", backup
    mesh.assert_restores(backup["restore_point"], disk)
    (task,) = [
        r.value
        for r in mesh.records("tasks")
        if isinstance(r.value, Task) and r.value.session_id == backup["session"]
    ]
    assert task.epoch == 0, "written with the previous schema: read with its default"
    session = mesh.api("GET", f"/api/v1/sessions/{backup['session']}").json()
    assert session["epoch"] == 1, "the orchestrator ran it as its first run all the same"


def test_jobs_and_sessions_an_older_orchestrator_kept_as_json_are_read(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """The orchestrator's own state as orchestrators before typed records wrote it (a job
    and a session as JSON documents) is read after the upgrade, and written back typed."""
    mesh = mesh_processes
    mesh.up(shards=1)
    job = {"name": "old", "vms": [{"name": "vm", "disks": [{"name": "sda", "source": "/x"}]}]}
    session = {
        "id": "0123456789abcdef0123456789abcdef",
        "kind": "backup",
        "state": "success",
        "repository": "default",
        "job": "old",
        "created": "2026-11-20T01:00:00.123456Z",
        "tasks": [{"disk": "vm.sda", "path": "/x", "state": "success"}],
        "result": {"prune": {"kept": {}, "removed": []}},
    }
    plan = {"restore_point": "20261120T010000Z-00000000", "compression": "fast"}
    plan |= {"changed_ranges": "", "dirty_bitmaps": {}, "guest": None}
    plan |= {"snapshot": {"provider": "none"}}
    mesh.produce(
        "jobs",
        JobDefinition(name="old", definition=json.dumps(job), updated="2026-11-20"),
        b"old",
    )
    mesh.produce(
        "sessions",
        SessionRecord(session_id=session["id"], session=json.dumps(session), plan=json.dumps(plan)),
        session["id"].encode(),
    )
    mesh.kill("orchestrator", signal.SIGTERM)
    mesh.start("orchestrator")

    (listed,) = mesh.api("GET", "/api/v1/jobs").json()
    assert (listed["job"]["name"], listed["origin"]) == ("old", "api")
    read = mesh.api("GET", f"/api/v1/sessions/{session['id']}").json()
    assert (read["state"], read["job"], read["tasks"][0]["disk"]) == ("success", "old", "vm.sda")

    assert mesh.api("PUT", "/api/v1/jobs/old", json=job).status_code == 200
    stored = [r.value for r in mesh.records("jobs") if r.key == b"old"]
    assert isinstance(stored[-1], StoredJob), "written back as a typed record"
