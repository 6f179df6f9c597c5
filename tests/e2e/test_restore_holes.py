"""A restore through the mesh that meets a damaged chunk, every role its own process:
without ``--allow-holes`` it fails naming the block and its byte range and leaves
nothing under the destination's name; with it, it restores the rest, leaves the block
as zeros and lists the hole in the session's warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core.blocks import digest
from blockferry.repository.pack import CHUNK_HEADER
from tests.e2e.harness import MeshProcesses
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    block,
    flip_byte,
    make_image,
    pack_file,
)

pytestmark = pytest.mark.e2e


def test_allow_holes_restores_the_rest_and_lists_the_hole(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "1")
    repo = mesh.open_repository()
    image = make_image("abcdAB0ef", tail=777)
    rp = backup(repo, "vm", {"d0": image}).id
    entry = repo.locate(digest(block("d"), repo.config.dedupe_key))  # block 3
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 7)
    for role in ("target-mover", "orchestrator", "source-mover"):
        mesh.start(role, wait=False)
    for role in ("target-mover", "orchestrator", "source-mover"):
        mesh.wait_ready(role)
    hole = "1 block: block 3 (bytes [786432, 1048576))"

    refused = tmp_path / "refused.img"
    failed = mesh.cli("restore", rp, "--to", str(refused))
    assert failed.returncode != 0
    said = " ".join(failed.stderr.split())  # the CLI wraps its lines
    assert f"{hole} not sent: their chunks are damaged or missing" in said
    assert "--allow-holes" in said
    assert not refused.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".refused")]

    restored = tmp_path / "restored.img"
    result = mesh.cli_json("restore", rp, "--to", str(restored), "--allow-holes")
    assert result["state"] == "warning", result
    assert result["warnings"] == [
        f"{hole} left as zeros (holes): their chunks are damaged or missing in the repository"
    ]
    assert result["counters"]["blocks_hole"] == 1
    hole_at = 3 * BLOCK_SIZE
    assert restored.read_bytes() == (
        image[:hole_at] + bytes(BLOCK_SIZE) + image[hole_at + BLOCK_SIZE :]
    )
