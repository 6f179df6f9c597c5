"""Damage heals through the mesh: a byte flipped inside a stored chunk is named by verify
and quarantined; the next backup of the same source stores the block again; verify is
clean and the old restore point restores byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

from blockferry.core.blocks import digest
from blockferry.repository.pack import CHUNK_HEADER
from tests.e2e.harness import MeshProcesses, make_disk
from tests.unit.repository.repo_helpers import flip_byte, pack_file


def test_a_damaged_chunk_is_named_quarantined_and_healed_by_the_next_backup(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=1)
    disk = make_disk(tmp_path / "disk.img", 4, seed=60)
    old = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")

    repo = mesh.open_repository()
    block_size = repo.config.block_size
    second_block = disk.read_bytes()[block_size : 2 * block_size]
    damaged = digest(second_block, repo.config.dedupe_key)
    entry = repo.locate(damaged)
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 10)

    found = mesh.cli("verify", "--json")
    assert found.returncode != 0
    report = json.loads(found.stdout)
    assert report["quarantined"] == [damaged.hex()]
    assert [d["digest"] for d in report["damage"]] == [damaged.hex()]
    assert report["damaged_restore_points"] == [old["restore_point"]]

    healing = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")
    assert healing["state"] == "success", healing
    assert healing["counters"]["blocks_sent"] + healing["counters"]["blocks_resent"] >= 1

    clean = mesh.cli_json("verify")
    assert clean["ok"] is True, clean
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", old["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()
