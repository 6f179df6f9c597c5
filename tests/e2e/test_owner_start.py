"""An owner started before its repository exists (a first install, where the repository
is made in the target mover's own pod): it runs, not ready, says what to do, and serves
the repository as soon as `blockferry repo init` has made it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import MeshProcesses, make_disk

pytestmark = pytest.mark.e2e


def test_a_target_mover_waits_for_its_repository_and_then_serves_it(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    process = mesh.start("target-mover", wait=False)
    port = mesh.ports["target-mover"]
    deadline = time.monotonic() + 60
    while "is served once it is there" not in mesh.log("target-mover"):
        assert process.poll() is None, mesh.log("target-mover")
        assert time.monotonic() < deadline, mesh.log("target-mover")
        time.sleep(0.2)
    assert "run `blockferry repo init" in mesh.log("target-mover")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 503
    assert not mesh.repository.exists(), "waiting creates nothing"

    mesh.init_repository("--block-size", "256", "--shards", "2")
    mesh.wait_ready("target-mover", timeout=30)
    for role in mesh.roles[1:]:
        mesh.start(role)
    disk = make_disk(tmp_path / "vm.img", 8, seed=71)
    session = mesh.cli_json("backup", str(disk), "--job", "vm", "--wait")
    assert session["state"] == "success", session
    mesh.assert_restores(session["restore_point"], disk)
