"""Bad input through the whole mesh, every role its own process: each case ends in a
clear error and a non-zero exit, leaves nothing partial behind, and earlier restore
points stay intact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.e2e.harness import BLOCKFERRY, MeshProcesses, make_disk
from tests.system import loop_device, small_tmpfs

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def squeezed(text: str) -> str:
    """``text`` without whitespace: the CLI's console wraps long messages."""
    return "".join(text.split())


def assert_says(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode != 0, result
    for part in parts:
        assert squeezed(part) in squeezed(result.stderr), result.stderr


def failed_backup(mesh: MeshProcesses, source: Path, *says: str) -> dict[str, Any]:
    """Run ``backup --wait`` that must fail saying ``says``; its JSON document."""
    result = mesh.cli("backup", str(source), "--wait", "--json", timeout=60)
    assert_says(result, f"backup of {source.name} failed", *says)
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["state"] == "failed"
    assert document["restore_point"] is None
    return document


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if ".tmp" in p.name]


def nothing_staged(repository: Path) -> None:
    assert list((repository / "staging").glob("*")) == []
    assert temporaries(repository) == []


async def _lag(mesh: MeshProcesses, group: str, topic: str, partitions: int) -> dict[int, int]:
    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=mesh.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"],
        group_id=f"{prefix}.{group}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        topic = f"{prefix}.{topic}"
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        end = await consumer.end_offsets(tps)
        return {tp.partition: end[tp] - (await consumer.committed(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()


def extents_all_committed(mesh: MeshProcesses, shards: int = 2, timeout: float = 15) -> None:
    """The target's extents consumer committed every record: a restart reads no finished
    (or refused) disk again."""
    deadline = time.monotonic() + timeout
    while True:
        lag = asyncio.run(_lag(mesh, "default.assembly", "default.extents", shards))
        if lag and not any(lag.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"extents not committed: lag per partition {lag}")
        time.sleep(0.5)


def session_for(mesh: MeshProcesses, path: Path, timeout: float = 30) -> dict[str, Any]:
    """The orchestrator's session of ``path``, once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = mesh.api("GET", "/api/v1/sessions").json()
        for session in sessions:
            if session["tasks"][0]["path"] == str(path):
                return dict(session)
        time.sleep(0.1)
    raise AssertionError(f"no session for {path}")


def follow(mesh: MeshProcesses, session_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session: dict[str, Any] = mesh.api("GET", f"/api/v1/sessions/{session_id}").json()
        if session["state"] in ("success", "warning", "failed"):
            return session
        time.sleep(0.2)
    raise AssertionError(f"session {session_id} did not end in {timeout} s")


def restore_identical(mesh: MeshProcesses, rp: str, disk: Path, to: Path) -> None:
    result = mesh.cli_json("restore", rp, "--to", str(to))
    assert result["state"] == "success", result
    assert to.read_bytes() == disk.read_bytes()


# -- 1. unreadable sources -----------------------------------------------------------------


def test_unreadable_sources_fail_naming_the_source(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)

    directory = tmp_path / "a-directory"
    directory.mkdir()
    document = failed_backup(mesh, directory, str(directory.resolve()))
    assert str(directory.resolve()) in document["error"]
    assert "not a regular file or block device" in document["error"]

    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    # opening a FIFO must not wait for a writer (forever, with no writer)
    document = failed_backup(mesh, fifo, str(fifo.resolve()))
    assert str(fifo.resolve()) in document["error"]
    assert "not a regular file or block device" in document["error"]

    # a path the CLI does not see: absolute, it is the source movers' to open (the CLI
    # may run elsewhere); relative, it is refused at once
    absent = tmp_path / "absent.img"
    failed_backup(mesh, absent, str(absent), "No such file or directory")
    assert_says(mesh.cli("backup", "absent.img", "--json"), "absent.img does not exist here")

    # A source that is gone when the mover opens it (the CLI saw it exist).
    vanishing = make_disk(tmp_path / "vanishing.img", 1, seed=2)
    mesh.kill("source-mover", signal.SIGTERM)
    backup = subprocess.Popen(
        [*BLOCKFERRY, "backup", str(vanishing), "--wait", "--json"],
        env=mesh.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        session_for(mesh, vanishing.resolve())
        vanishing.unlink()
        mesh.start("source-mover")
        stdout, stderr = backup.communicate(timeout=120)
    finally:
        if backup.poll() is None:
            backup.kill()
            backup.wait()
    result = subprocess.CompletedProcess(backup.args, backup.returncode, stdout, stderr)
    assert_says(result, str(vanishing.resolve()), "No such file or directory")
    assert json.loads(stdout)["state"] == "failed"

    assert mesh.cli_json("restore-points")["restore_points"] == []
    nothing_staged(mesh.repository)
    assert list((mesh.repository / "restorepoints").glob("*")) == []

    # the mesh goes on working
    disk = make_disk(tmp_path / "good.img", 2, seed=4)
    backup_ok = mesh.cli_json("backup", str(disk), "--wait")
    assert backup_ok["state"] == "success"
    restore_identical(mesh, backup_ok["restore_point"], disk, tmp_path / "restored.img")
    extents_all_committed(mesh)
    mesh.kill("target-mover", signal.SIGTERM)
    mesh.start("target-mover")  # reads no finished disk again: nothing is staged anew
    extents_all_committed(mesh)
    assert list((mesh.repository / "staging").glob("*")) == []


def test_a_missing_or_wrong_dedupe_key_fails_the_backup_at_once_naming_the_file(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """The key is not on the bus: a mover without the repository's own key refuses the
    task before it sends a block, saying which file and what to do."""
    mesh = mesh_processes
    mesh.up(shards=2)
    key = mesh.workdir / "keys" / "default.key"
    right = key.read_text()
    disk = make_disk(tmp_path / "vm.img", 2, seed=9)

    key.unlink()
    document = failed_backup(mesh, disk, "no dedupe key for repository default", str(key))
    assert "blockferry repo export-dedupe-key" in document["error"]

    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    document = failed_backup(mesh, disk, f"the dedupe key in {key} is not repository default's")
    assert squeezed("export the key of repository default again") in squeezed(document["error"])
    assert_nothing_sent(mesh)

    key.write_text(right)  # read again by the next task: no restart
    backup_ok = mesh.cli_json("backup", str(disk), "--wait")
    assert backup_ok["state"] == "success"
    restore_identical(mesh, backup_ok["restore_point"], disk, tmp_path / "restored.img")


def assert_nothing_sent(mesh: MeshProcesses, shards: int = 2) -> None:
    """No block reached the repository's chunk topic."""
    ends = asyncio.run(_end_offsets(mesh, "default.chunks", shards))
    assert sum(ends) == 0, ends


async def _end_offsets(mesh: MeshProcesses, topic: str, partitions: int) -> list[int]:
    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]
    consumer = AIOKafkaConsumer(bootstrap_servers=mesh.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"])
    await consumer.start()
    try:
        tps = [TopicPartition(f"{prefix}.{topic}", p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


# -- 2. uninitialised repository ------------------------------------------------------------


def test_uninitialised_repository_says_to_run_repo_init(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    empty = tmp_path / "empty"
    empty.mkdir()

    assert_says(mesh.cli("repo", "check", str(empty)), "blockferry repo init", str(empty))
    absent = tmp_path / "absent"
    assert_says(mesh.cli("repo", "check", str(absent)), "blockferry repo init", str(absent))
    destination = tmp_path / "restored.img"
    restored = mesh.cli("repo", "restore", str(empty), "rp-1", "--to", str(destination))
    assert_says(restored, "blockferry repo init", str(empty))
    assert not destination.exists()
    assert list(empty.iterdir()) == [], "nothing is created in the directory"

    # the target mover waits for it, not ready, creating nothing (test_owner_start.py
    # shows it serving the repository once made)
    target = mesh.start(
        "target-mover",
        wait=False,
        BLOCKFERRY_TARGET_MOVER__REPOSITORIES=json.dumps({"default": str(empty)}),
    )
    deadline = time.monotonic() + 60
    while squeezed(f"blockferry repo init {empty}") not in squeezed(mesh.log("target-mover")):
        assert target.poll() is None, mesh.log("target-mover")
        assert time.monotonic() < deadline, mesh.log("target-mover")
        time.sleep(0.2)
    ready = httpx.get(f"http://127.0.0.1:{mesh.ports['target-mover']}/readyz", timeout=5)
    assert ready.status_code == 503
    assert list(empty.iterdir()) == []


# -- 3. repository disk full ------------------------------------------------------------------


def test_repository_disk_full_fails_cleanly_and_keeps_earlier_restore_points(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_TARGET_MOVER__STORED_WAIT_S"] = "10"
    with small_tmpfs(mesh.repository, "8m"):
        try:
            mesh.up(shards=2)
            small = make_disk(tmp_path / "small.img", 2, seed=7)
            first = mesh.cli_json("backup", str(small), "--wait")
            assert first["state"] == "success"
            rp = first["restore_point"]

            big = tmp_path / "big.img"
            big.write_bytes(os.urandom(12 * MIB))
            started = time.monotonic()
            document = failed_backup(mesh, big, "no space left on the repository")
            assert "no space left on the repository" in document["error"], document
            assert document["bytes_read"] == 12 * MIB, "a failed session says how far it got"
            assert time.monotonic() - started < 60

            assert temporaries(mesh.repository) == [], "a failed pack leaves no temp file"
            assert [p["id"] for p in mesh.cli_json("restore-points")["restore_points"]] == [rp]
            assert mesh.cli_json("verify", rp)["ok"] is True
            restore_identical(mesh, rp, small, tmp_path / "restored.img")
            extents_all_committed(mesh)

            # restarted, the failed session's chunks still waiting on Kafka: nothing left over
            mesh.kill("target-mover", signal.SIGTERM)
            nothing_staged(mesh.repository)
            mesh.start("target-mover")
            assert mesh.cli_json("verify", rp)["ok"] is True
            restore_identical(mesh, rp, small, tmp_path / "restored-again.img")
            assert list((mesh.repository / "staging").glob("*")) == []
            repo = mesh.open_repository()
            assert [p.id for p in repo.restore_points()] == [rp]
        finally:
            mesh.close()


# -- 4. restore onto an existing file ----------------------------------------------------------


def test_restore_through_the_api_without_force_leaves_an_existing_file(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "d.img", 2, seed=5)
    rp = mesh.cli_json("backup", str(disk), "--wait")["restore_point"]

    existing = tmp_path / "existing.img"
    other = os.urandom(3 * MIB)
    existing.write_bytes(other)
    refused = mesh.cli("restore", rp, "--to", str(existing))
    assert_says(refused, "--force")

    response = mesh.api(
        "POST",
        "/api/v1/restores",
        json={"restore_point": rp, "destination": str(existing), "force": False},
    )
    assert response.status_code == 202, response.text
    session = follow(mesh, response.json()["id"])
    assert session["state"] == "failed"
    assert str(existing) in session["error"]
    assert "--force" in session["error"]
    assert existing.read_bytes() == other
    assert temporaries(tmp_path) == []
    streamed = 'blockferry_target_mover_bytes_restored_total{repository="default"} 0.0'
    assert streamed in mesh.metrics("target-mover"), "a refused restore is not even streamed"
    restore_identical(mesh, rp, disk, tmp_path / "elsewhere.img")


# -- 5. restore over a block device -------------------------------------------------------------


def test_restore_over_a_block_device_writes_every_byte(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_RESTORE_ROOTS"] = json.dumps([str(tmp_path), "/dev"])
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "d.img", 4, seed=3)
    source = disk.read_bytes()
    backup = mesh.cli_json("backup", str(disk), "--wait")
    assert backup["counters"]["blocks_zero"] > 0, "the disk has zero blocks"
    rp = backup["restore_point"]

    backing = tmp_path / "device.img"
    old = os.urandom(len(source) + 2 * MIB - len(source) % 512)
    backing.write_bytes(old)
    with loop_device(backing) as device:
        refused = mesh.cli("restore", rp, "--to", str(device), "--json")
        assert_says(refused, str(device), "--force")
        with open(device, "rb") as f:
            assert f.read() == old, "refused: the device is untouched"

        result = mesh.cli_json("restore", rp, "--to", str(device), "--force")
        assert result["state"] == "success", result
        with open(device, "rb") as f:
            written = f.read()
    assert written[: len(source)] == source, "every byte, zero blocks included"
    assert written[len(source) :] == old[len(source) :], "nothing past the disk"


def test_restores_only_write_under_the_restore_roots(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    roots = tmp_path / "restores"
    roots.mkdir()
    mesh.env["BLOCKFERRY_RESTORE_ROOTS"] = json.dumps([str(roots)])
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "d.img", 2, seed=4)
    rp = mesh.cli_json("backup", str(disk), "--wait")["restore_point"]

    outside = tmp_path / "outside.img"
    refused = mesh.cli("restore", rp, "--to", str(outside))
    assert_says(refused, str(outside), "restore root", str(roots))
    relative = mesh.api(
        "POST", "/api/v1/restores", json={"restore_point": rp, "destination": "x.img"}
    )
    assert relative.status_code == 400, relative.text
    climbing = mesh.api(
        "POST",
        "/api/v1/restores",
        json={"restore_point": rp, "destination": f"{roots}/../outside.img"},
    )
    assert climbing.status_code == 400, climbing.text

    # a link inside the root that leads out of it: only the mover sees where it leads
    # (the CLI resolves links itself, so this goes to the API as it is)
    (roots / "escape").symlink_to(tmp_path, target_is_directory=True)
    started = mesh.api(
        "POST",
        "/api/v1/restores",
        json={"restore_point": rp, "destination": str(roots / "escape" / "x.img")},
    )
    assert started.status_code == 202, started.text
    escaped = follow(mesh, started.json()["id"])
    assert escaped["state"] == "failed"
    assert "not under a restore root" in escaped["error"], escaped["error"]
    assert not (tmp_path / "x.img").exists()
    assert not outside.exists()

    inside = roots / "d.img"
    mesh.cli_json("restore", rp, "--to", str(inside))
    assert inside.read_bytes() == disk.read_bytes()
