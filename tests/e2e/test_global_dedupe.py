"""Global dedupe through two dedupe-index processes, one of them killed mid-backup."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from blockferry.repository import verify
from tests.e2e.harness import ROLES, MeshProcesses, make_disk, packed_digests

pytestmark = pytest.mark.e2e


def test_dedupe_index_killed_mid_backup(mesh_processes: MeshProcesses, tmp_path: Path) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "4")
    for role in ROLES:
        if role != "source-mover":
            mesh.start(role)
    mesh.start("dedupe-index", name="dedupe-index-2")
    mesh.start(
        "source-mover",
        BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="6",
        BLOCKFERRY_SOURCE_MOVER__LOOKUP_RETRY_S="1",
    )
    disk = make_disk(tmp_path / "vm.img", 48, seed=31)
    mesh.wait_for_shards({"dedupe-index": 2, "dedupe-index-2": 2})
    first = mesh.cli_json("backup", str(disk), "--job", "a", "--wait")
    assert first["counters"]["blocks_sent"] > 0

    def kill_when_a_quarter_is_read() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sessions = mesh.api("GET", "/api/v1/sessions").json()
            running = [s for s in sessions if s["job"] == "b"]
            if running and running[0]["blocks_done"] >= running[0]["blocks_total"] // 4 > 0:
                break
            time.sleep(0.1)
        mesh.kill("dedupe-index", signal.SIGKILL)

    killer = threading.Thread(target=kill_when_a_quarter_is_read)
    killer.start()
    second = mesh.cli_json("backup", str(disk), "--job", "b", "--wait")
    killer.join()
    assert second["state"] == "success", second
    c = second["counters"]
    assert c["blocks_deduplicated_global"] > 0, c
    print("backup with an index killed:", c)
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", second["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()

    # the survivor takes every shard when the group notices the death, and answers alone
    mesh.wait_for_shards({"dedupe-index-2": 4})
    third = mesh.cli_json("backup", str(disk), "--job", "c", "--wait")
    c = third["counters"]
    assert c["blocks_sent"] <= c["blocks_deduplicated_global"] // 20, c
    repo = mesh.open_repository()
    assert verify(repo).ok


def test_two_sessions_sending_the_same_new_blocks_at_once_store_them_once(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """Target-side dedupe alone: without lookups both sessions send every block."""
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_SOURCE_MOVER__GLOBAL_DEDUPE"] = "false"
    mesh.up(shards=4)
    disk = make_disk(tmp_path / "template.img", 32, seed=41)
    results: dict[str, dict[str, Any]] = {}

    def back_up(job: str) -> None:
        results[job] = mesh.cli_json("backup", str(disk), "--job", job, "--wait")

    threads = [threading.Thread(target=back_up, args=(job,)) for job in ("vm-a", "vm-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[job]["state"] for job in ("vm-a", "vm-b")] == ["success", "success"]
    digests = packed_digests(mesh.open_repository())
    assert len(digests) == len(set(digests)), "a block sent by both sessions is stored once"
    sent = [results[job]["counters"]["blocks_sent"] for job in ("vm-a", "vm-b")]
    assert sent == [len(digests), len(digests)], "each session sent every block"
    for job in ("vm-a", "vm-b"):
        restored = tmp_path / f"{job}.img"
        mesh.cli_json("restore", results[job]["restore_point"], "--to", str(restored))
        assert restored.read_bytes() == disk.read_bytes()
