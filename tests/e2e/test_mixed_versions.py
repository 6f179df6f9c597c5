"""A rolling upgrade's middle: one role still runs the previous release's schema of a
compatible change (Task before its ``epoch`` field) while the others run this one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import blockferry
from blockferry.transport.records import Task
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
