"""Encryption at rest through the whole mesh: a disk's known bytes are in no file of the
repository, the backup restores byte-identical, and the target mover without its key
refuses to start, saying where it looked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockferry.repository import verify
from tests.e2e.harness import MeshProcesses, make_disk

pytestmark = pytest.mark.e2e

MARKER = b"blockferry-e2e-marker-3f9a61"


def marked_disk(path: Path) -> Path:
    """A generated disk with the marker in compressible and random regions alike."""
    make_disk(path, 8, seed=61)
    size = path.stat().st_size
    with path.open("r+b") as disk:
        for n, offset in enumerate(range(0, size - 65536, size // 16)):
            disk.seek(offset)
            filler = os.urandom(4096) if n % 2 else b"\x00" * 4096
            disk.write((MARKER + filler) * 8)
    return path


def holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def test_a_disks_bytes_are_in_no_file_of_the_repository(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = marked_disk(tmp_path / "marked.img")
    assert MARKER in disk.read_bytes()

    backup = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")
    assert backup["state"] == "success", backup
    mesh.assert_restores(backup["restore_point"], disk)
    assert holding(mesh.repository, MARKER) == []
    assert verify(mesh.open_repository()).ok
    checked = mesh.cli_json("repo", "check", str(mesh.repository), "--read-data")
    assert checked["ok"] is True, checked


def test_the_target_mover_without_its_key_says_where_it_looked(
    mesh_processes: MeshProcesses,
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "1")
    mesh.key_file.rename(mesh.key_file.with_suffix(".away"))
    with pytest.raises(RuntimeError, match="target-mover exited") as caught:
        mesh.start("target-mover")
    message = "".join(str(caught.value).split())  # the console wraps long lines
    assert "isencrypted:giveitskeyfileorpassphrase" in message
    assert "(thetargetmoverreads" in message and "repository-keys/default.key)" in message
