"""Full backup and byte-identical restore through the mesh, every role its own process."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from blockferry.repository import verify
from tests.e2e.harness import MeshProcesses, make_disk, packed_digests

pytestmark = pytest.mark.e2e


def test_full_backup_restore_identical(mesh_processes: MeshProcesses, tmp_path: Path) -> None:
    mesh = mesh_processes
    mesh.up(shards=4)
    disk = make_disk(tmp_path / "vm1.img", 24, seed=3)

    backup = mesh.cli_json("backup", str(disk), "--job", "vm1", "--wait")
    assert backup["state"] == "success"
    counters = backup["counters"]
    assert counters["blocks_hole"] > 0, "the image's holes are not read"
    assert counters["blocks_read"] + counters["blocks_hole"] == counters["blocks_total"]
    assert backup["bytes_read"] < disk.stat().st_size
    assert counters["blocks_total"] == (disk.stat().st_size + 262143) // 262144
    assert counters["blocks_zero"] > 0
    assert counters["blocks_deduplicated_session"] > 0
    assert 0 < backup["bytes_sent"] < backup["bytes_read"]
    rp = backup["restore_point"]

    restored = tmp_path / "restored.img"
    result = mesh.cli_json("restore", rp, "--to", str(restored))
    assert result["state"] == "success"
    assert restored.read_bytes() == disk.read_bytes()
    assert restored.stat().st_blocks * 512 < restored.stat().st_size, "zero blocks are holes"

    points = mesh.cli_json("restore-points")["restore_points"]
    assert [(p["id"], p["job"]) for p in points] == [(rp, "vm1")]
    report = mesh.cli_json("verify", rp)
    assert report["ok"] is True

    digests = packed_digests(mesh.open_repository())
    assert len(digests) == len(set(digests)), "a digest is stored once"
    assert "blockferry_source_mover_blocks_total" in mesh.metrics("source-mover")
    target_metrics = mesh.metrics("target-mover")
    assert 'blockferry_target_mover_chunks_total{outcome="stored",repository="default"}' in (
        target_metrics
    )
    commits = re.search(
        r'^blockferry_target_mover_storage_requests_total\{backend="file",operation="commit",'
        r'repository="default"\} (\S+)$',
        target_metrics,
        re.M,
    )
    assert commits is not None and float(commits.group(1)) >= 1, "packs were published"


def test_restore_refuses_an_existing_file_without_force_and_replaces_it_with(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "d.img", 6, seed=5)
    rp = mesh.cli_json("backup", str(disk), "--wait")["restore_point"]

    existing = tmp_path / "existing.img"
    other = os.urandom(9 * 1024 * 1024)
    existing.write_bytes(other)
    refused = mesh.cli("restore", rp, "--to", str(existing))
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert existing.read_bytes() == other

    mesh.cli_json("restore", rp, "--to", str(existing), "--force")
    assert existing.read_bytes() == disk.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".existing")], "no temp left"


def test_target_mover_killed_mid_backup(mesh_processes: MeshProcesses, tmp_path: Path) -> None:
    mesh = mesh_processes
    mesh.up(shards=4)
    disk = make_disk(tmp_path / "big.img", 64, seed=11)

    def kill_and_restart() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any((mesh.repository / "packs").rglob("*.pack")):
                break
            time.sleep(0.05)
        mesh.kill("target-mover", signal.SIGKILL)
        time.sleep(1)
        mesh.start("target-mover")

    killer = threading.Thread(target=kill_and_restart)
    killer.start()
    backup = mesh.cli_json("backup", str(disk), "--wait")
    killer.join()
    assert backup["state"] == "success", backup
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", backup["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()
    digests = packed_digests(mesh.open_repository())
    assert len(digests) == len(set(digests)), "no digest is stored twice"
    assert verify(mesh.open_repository()).ok


def test_source_mover_killed_mid_backup_resumes_elsewhere(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """The task's lease expires, another mover takes it and resumes after the blocks the
    target side already holds; the restore point is whole."""
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "2")
    slow = {
        "BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S": "8",
        "BLOCKFERRY_SOURCE_MOVER__EXTENTS_PER_RECORD": "8",
    }
    mesh.start("target-mover")
    mesh.start("orchestrator")
    mesh.start("source-mover", **slow)
    disk = make_disk(tmp_path / "vm.img", 48, seed=21)

    def kill_when_a_quarter_is_read() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sessions = mesh.api("GET", "/api/v1/sessions").json()
            if sessions and sessions[0]["blocks_done"] >= sessions[0]["blocks_total"] // 4 > 0:
                break
            time.sleep(0.1)
        mesh.kill("source-mover", signal.SIGKILL)
        mesh.start("source-mover")

    killer = threading.Thread(target=kill_when_a_quarter_is_read)
    killer.start()
    backup = mesh.cli_json("backup", str(disk), "--wait")
    killer.join()
    assert backup["state"] == "success", backup
    counters = backup["counters"]
    assert counters["blocks_resumed"] >= counters["blocks_total"] // 8, counters
    assert counters["bytes_read"] < disk.stat().st_size, "the second mover did not read it all"
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", backup["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()
