"""Copies of restore points between repositories through the mesh: the 3-2-1 rule's
second copy. Three repositories on one target mover: ``default`` (the backups),
``copy`` (made with ``repo init --copy-params-from default``: the same block size and
dedupe key) and ``other`` (its own dedupe key)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockferry.core.blocks import digest
from blockferry.repository.pack import CHUNK_HEADER
from tests.e2e.harness import MeshProcesses, make_disk
from tests.minio import MinioServer
from tests.unit.repository.repo_helpers import flip_byte, pack_file

pytestmark = pytest.mark.e2e

BLOCK = 256 * 1024


@pytest.fixture
def mesh(mesh_processes: MeshProcesses, tmp_path: Path) -> Iterator[MeshProcesses]:
    mesh = mesh_processes
    locations = {name: str(tmp_path / f"{name}-repository") for name in ("copy", "other")}
    mesh.env["BLOCKFERRY_TARGET_MOVER__REPOSITORIES"] = json.dumps(
        {"default": mesh.location, **locations}
    )
    mesh.init_repository("--shards", "2", "--block-size", "256")
    for name, location in locations.items():
        key = tmp_path / "repository-keys" / f"{name}.key"
        params = ["--copy-params-from", mesh.location, "--from-key-file", str(mesh.key_file)]
        mesh.cli(
            "repo",
            "init",
            location,
            "--key-file",
            str(key),
            "--shards",
            "2",
            *(params if name == "copy" else ["--block-size", "256"]),
            check=True,
        )
        dedupe_key = tmp_path / "keys" / f"{name}.key"
        mesh.cli(
            "repo",
            "export-dedupe-key",
            location,
            str(dedupe_key),
            "--key-file",
            str(key),
            check=True,
        )
    mesh.start_all()
    yield mesh


def _backup(mesh: MeshProcesses, disk: Path) -> tuple[Path, dict[str, Any]]:
    """``disk`` backed up into ``default`` as disk ``d`` of job ``vm``."""
    return disk, mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d", "--wait")


def _copy(mesh: MeshProcesses, restore_point: str, to: str) -> dict[str, Any]:
    session = mesh.cli_json("copy", restore_point, "--to", to, "--wait")
    assert session["state"] == "success", session
    assert session["kind"] == "copy"
    return session


def test_a_copy_sends_only_what_the_destination_lacks_and_restores_on_its_own(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "vm.img", 24, seed=41)
    first_bytes = tmp_path / "vm-first.img"
    shutil.copyfile(disk, first_bytes)
    full = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d", "--wait")
    first = _copy(mesh, full["restore_point"], "copy")
    assert first["counters"]["blocks_sent"] == full["counters"]["blocks_sent"]
    assert first["restore_point"] == full["restore_point"], "a copy keeps its source's id"
    again = mesh.cli("copy", full["restore_point"], "--to", "copy")
    assert again.returncode != 0
    assert "already" in again.stderr, "nothing is copied twice"

    with disk.open("r+b") as f:  # two blocks change
        f.seek(3 * BLOCK)
        f.write(b"\x33" * BLOCK)
        f.seek(30 * BLOCK + 9)
        f.write(b"changed")
    _, incremental = _backup(mesh, disk)
    second = _copy(mesh, incremental["restore_point"], "copy")
    assert second["parent"] == first["restore_point"]
    assert second["tracking"] == "source-digests"
    assert second["counters"]["blocks_read"] == 2, "only the blocks that differ are read"
    assert second["counters"]["blocks_sent"] == 2

    made = mesh.cli_json("restore-points", "--job", "vm")["restore_points"]
    # the source's originals pruned and collected: the copies restore on their own
    kept = {"keep_last": 1}
    mesh.api("POST", "/api/v1/prune", json={"job": "vm", "retention": kept}).raise_for_status()
    mesh.api("POST", "/api/v1/gc", json={}).raise_for_status()
    mesh.assert_restores(first["restore_point"], first_bytes, repository="copy")
    mesh.assert_restores(second["restore_point"], disk, repository="copy")
    listed = mesh.cli_json("restore-points", "--repo", "copy", "--job", "vm")
    assert [(rp["id"], rp["created"]) for rp in listed["restore_points"]] == [
        (rp["id"], rp["created"]) for rp in made
    ], "the copies keep their sources' ids and times"


def test_a_copy_to_a_repository_with_its_own_dedupe_key_reads_and_digests_every_block(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    disk, full = _backup(mesh, make_disk(tmp_path / "vm.img", 16, seed=42))
    first = _copy(mesh, full["restore_point"], "other")
    assert first["counters"]["blocks_sent"] == full["counters"]["blocks_sent"]

    with disk.open("r+b") as f:  # one block changes
        f.seek(7 * BLOCK)
        f.write(b"\x77" * BLOCK)
    _, incremental = _backup(mesh, disk)
    second = _copy(mesh, incremental["restore_point"], "other")
    assert second["tracking"] == "digest-compare"
    data_blocks = full["counters"]["blocks_total"] - full["counters"]["blocks_zero"]
    assert second["counters"]["blocks_read"] >= data_blocks - 1, "every data block is read"
    assert second["counters"]["blocks_sent"] == 1, "only the chunk not there is sent"
    mesh.assert_restores(second["restore_point"], disk, repository="other")


def test_a_copy_names_another_repository_and_a_restore_point_is_not_backed_up(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    _, full = _backup(mesh, make_disk(tmp_path / "vm.img", 4, seed=43))
    same = mesh.cli("copy", full["restore_point"], "--to", "default")
    assert same.returncode != 0
    assert "another repository" in same.stderr
    unknown = mesh.cli("copy", full["restore_point"], "--to", "nowhere")
    assert unknown.returncode != 0
    assert "nowhere" in unknown.stderr
    uri = f"restore-point://default/{full['restore_point']}/d"
    backed_up = mesh.api("POST", "/api/v1/backups", json={"source": uri, "disk": "d", "job": "vm"})
    assert backed_up.status_code == 422
    assert "copied" in backed_up.text


def test_a_copy_interrupted_by_a_killed_mover_resumes_and_restores(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    disk, full = _backup(mesh, make_disk(tmp_path / "vm.img", 32, seed=44))
    slow = {
        "BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S": "2",
        "BLOCKFERRY_SOURCE_MOVER__EXTENTS_PER_RECORD": "8",  # resumable every 8 blocks
    }
    mesh.kill("source-mover")
    mesh.start("source-mover", **slow)
    started = mesh.cli_json("copy", full["restore_point"], "--to", "copy")["session"]
    mesh.wait_for_progress(started, 0.3)
    mesh.kill("source-mover")
    mesh.start("source-mover")
    ended = mesh.follow(started, timeout=300)
    assert ended["state"] == "success", ended
    resumed = ended["tasks"][0]["counters"]["blocks_resumed"]
    assert resumed > 0, "the second attempt went on from where the first left"
    mesh.assert_restores(ended["restore_point"], disk, repository="copy")


def test_a_damaged_chunk_in_the_source_fails_the_copy_and_commits_nothing(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    disk, full = _backup(mesh, make_disk(tmp_path / "vm.img", 8, seed=45))
    repo = mesh.open_repository()
    data = disk.read_bytes()
    blocks = [data[i : i + BLOCK] for i in range(0, len(data) - BLOCK + 1, BLOCK)]
    first = next(i for i, content in enumerate(blocks) if content.strip(b"\0"))
    entry = repo.locate(digest(blocks[first], repo.config.dedupe_key))
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 7)

    failed = mesh.cli("copy", full["restore_point"], "--to", "copy", "--wait")
    assert failed.returncode != 0
    said = " ".join(failed.stderr.split())
    assert f"block {first} (bytes [{first * BLOCK}, {(first + 1) * BLOCK}))" in said, said
    assert "damaged or missing" in said
    listed = mesh.cli_json("restore-points", "--repo", "copy")
    assert listed["restore_points"] == [], "nothing of the copy was committed"


def test_a_copy_to_an_s3_repository_behind_the_gateway(
    mesh: MeshProcesses, tmp_path: Path, minio: MinioServer
) -> None:
    """The second copy off the site: a bucket (a real MinIO server) the gateway serves,
    made with the local repository's parameters."""
    mesh.env.update(minio.env())  # the store's credentials, as an operator's would be
    location = f"s3://{minio.new_bucket()}/copies?endpoint={minio.endpoint}"
    key = tmp_path / "repository-keys" / "offsite.key"
    params = ["--copy-params-from", mesh.location, "--from-key-file", str(mesh.key_file)]
    mesh.cli("repo", "init", location, "--key-file", str(key), "--shards", "2", *params, check=True)
    dedupe_key = tmp_path / "keys" / "offsite.key"
    mesh.cli(
        "repo", "export-dedupe-key", location, str(dedupe_key), "--key-file", str(key), check=True
    )
    mesh.start("gateway", BLOCKFERRY_GATEWAY__REPOSITORIES=json.dumps({"offsite": location}))

    disk, full = _backup(mesh, make_disk(tmp_path / "vm.img", 16, seed=46))
    first = _copy(mesh, full["restore_point"], "offsite")
    assert first["counters"]["blocks_sent"] == full["counters"]["blocks_sent"]
    with disk.open("r+b") as f:
        f.seek(9 * BLOCK)
        f.write(b"\x99" * BLOCK)
    _, incremental = _backup(mesh, disk)
    second = _copy(mesh, incremental["restore_point"], "offsite")
    assert second["tracking"] == "source-digests"
    assert (second["counters"]["blocks_read"], second["counters"]["blocks_sent"]) == (1, 1)
    mesh.assert_restores(second["restore_point"], disk, repository="offsite")


def test_a_copy_job_catches_up_runs_after_its_source_and_keeps_its_own_retention(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "vm.img", 8, seed=47)
    vms = [{"name": "a", "disks": [{"name": "d", "source": str(disk)}]}]
    copies = {
        "name": "vm-offsite",
        "repository": "copy",
        "copy_from": {"job": "vm"},
        "retention": {"keep_last": 2},
    }
    mesh.api("POST", "/api/v1/jobs", json={"name": "vm", "vms": vms}).raise_for_status()
    mesh.api("POST", "/api/v1/jobs", json=copies).raise_for_status()
    made = []
    for run in range(3):  # three restore points while the copy job did not run
        with disk.open("r+b") as f:
            f.write(bytes([run + 1]) * BLOCK)
        made.append(_run(mesh, "vm")["restore_point"])

    first = _run(mesh, "vm-offsite")  # catches up: one session a restore point, oldest first
    assert first["kind"] == "copy"
    assert _copied(mesh, made[1:]) == made[1:], "all three copied, the oldest pruned by keep_last"
    again = mesh.api("POST", "/api/v1/jobs/vm-offsite/start")
    assert again.status_code == 409 and "nothing to copy" in again.text, "nothing copied twice"

    copies["copy_from"] = {"job": "vm", "after_source": True}
    mesh.api("PUT", "/api/v1/jobs/vm-offsite", json=copies).raise_for_status()
    with disk.open("r+b") as f:
        f.write(b"\x04" * BLOCK)
    made.append(_run(mesh, "vm")["restore_point"])
    assert _copied(mesh, made[2:]) == made[2:], "copied right after its source job"
    mesh.assert_restores(made[-1], disk, repository="copy")


def _run(mesh: MeshProcesses, job: str) -> dict[str, Any]:
    """Run ``job`` now and follow its (first) session to its end."""
    started = mesh.api("POST", f"/api/v1/jobs/{job}/start")
    started.raise_for_status()
    ended = mesh.follow(started.json()["id"])
    assert ended["state"] == "success", ended
    return ended


def _copied(mesh: MeshProcesses, wanted: list[str], timeout: float = 120) -> list[str]:
    """The restore points of job ``vm`` in ``copy`` once they are ``wanted`` (or the
    timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = mesh.cli_json("restore-points", "--repo", "copy", "--job", "vm")
        ids = [rp["id"] for rp in listed["restore_points"]]
        running = [s for s in mesh.api("GET", "/api/v1/sessions").json() if not s["finished"]]
        if (ids == wanted and not running) or time.monotonic() > deadline:
            return ids
        time.sleep(1)


def test_a_cancelled_copy_commits_nothing_and_a_later_copy_completes(
    mesh: MeshProcesses, tmp_path: Path
) -> None:
    disk, full = _backup(mesh, make_disk(tmp_path / "vm.img", 32, seed=48))
    mesh.kill("source-mover")
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="2")
    started = mesh.cli_json("copy", full["restore_point"], "--to", "copy")["session"]
    mesh.wait_for_progress(started, 0.1)
    mesh.cli("sessions", "cancel", started, check=True)
    cancelled = mesh.follow(started)
    assert cancelled["state"] == "cancelled", cancelled
    assert mesh.cli_json("restore-points", "--repo", "copy")["restore_points"] == []
    mesh.kill("source-mover")
    mesh.start("source-mover")
    copied = _copy(mesh, full["restore_point"], "copy")
    mesh.assert_restores(copied["restore_point"], disk, repository="copy")
