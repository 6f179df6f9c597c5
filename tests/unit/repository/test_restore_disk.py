"""Offline restore and the DiskWriter it shares with the Kafka restore path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.core.blocks import digest
from blockferry.core.errors import ConfigError, CorruptionError, DestinationError
from blockferry.repository import Repository, RestorePoint, restore_disk
from blockferry.repository.pack import CHUNK_HEADER
from blockferry.restore_target import DiskWriter
from tests import system
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    block,
    flip_byte,
    make_image,
    pack_file,
)

SPARSE_IMAGE = make_image("a" + "0" * 14 + "B", tail=1000)


@pytest.fixture
def point(repo: Repository) -> RestorePoint:
    committed: RestorePoint = backup(repo, "vm", {"sda": SPARSE_IMAGE})
    return committed


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_restore_is_byte_identical_and_sparse(
    repo: Repository, point: RestorePoint, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "sda.img"
    dest.parent.mkdir()
    done: list[int] = []
    result = restore_disk(repo, point.id, "sda", dest, force=False, progress=done.append)
    assert dest.read_bytes() == SPARSE_IMAGE
    assert result.disk_size == len(SPARSE_IMAGE) and result.blocks == 17
    assert result.zero_blocks == 14 and not result.device
    assert result.bytes_written == 2 * BLOCK_SIZE + 1000
    assert sum(done) == len(SPARSE_IMAGE) and len(done) == 17 and done[-1] == 1000
    assert dest.stat().st_blocks * 512 < len(SPARSE_IMAGE) // 2
    assert _leftovers(dest.parent) == []


def test_force_replaces_every_byte_of_an_existing_file(
    repo: Repository, point: RestorePoint, tmp_path: Path
) -> None:
    dest = tmp_path / "sda.img"
    dest.write_bytes(b"\xaa" * (2 * len(SPARSE_IMAGE)))
    dest.chmod(0o640)
    restore_disk(repo, point.id, "sda", dest, force=True)
    assert dest.read_bytes() == SPARSE_IMAGE
    assert dest.stat().st_mode & 0o777 == 0o640
    assert _leftovers(tmp_path) == []


def test_existing_file_is_refused_without_force_and_untouched(
    repo: Repository, point: RestorePoint, tmp_path: Path
) -> None:
    dest = tmp_path / "sda.img"
    dest.write_bytes(b"precious")
    before = dest.stat()
    with pytest.raises(DestinationError, match="--force"):
        restore_disk(repo, point.id, "sda", dest, force=False)
    assert dest.read_bytes() == b"precious"
    assert dest.stat().st_mtime_ns == before.st_mtime_ns
    assert _leftovers(tmp_path) == []


@pytest.mark.local_only
def test_damaged_chunk_aborts_and_leaves_the_destination_untouched(
    repo: Repository, point: RestorePoint, tmp_path: Path
) -> None:
    entry = repo.locate(digest(block("B"), repo.config.dedupe_key))
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 3)
    dest = tmp_path / "sda.img"
    dest.write_bytes(b"old")
    with pytest.raises(CorruptionError, match=entry.digest.hex()):
        restore_disk(repo, point.id, "sda", dest, force=True)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    assert repo.locks.list_locks() == []


@pytest.mark.parametrize(
    ("make_dest", "error", "message"),
    [
        (lambda d: d / "missing-dir" / "x.img", DestinationError, "does not exist"),
        (lambda d: d, DestinationError, "neither a regular file"),
    ],
)
def test_bad_destinations(
    repo: Repository,
    point: RestorePoint,
    tmp_path: Path,
    make_dest: object,
    error: type[Exception],
    message: str,
) -> None:
    assert callable(make_dest)
    with pytest.raises(error, match=message):
        restore_disk(repo, point.id, "sda", make_dest(tmp_path), force=True)


def test_unknown_disk(repo: Repository, point: RestorePoint, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no disk"):
        restore_disk(repo, point.id, "sdz", tmp_path / "x", force=False)
    assert not (tmp_path / "x").exists()


def test_disk_writer_out_of_order_and_incomplete(tmp_path: Path) -> None:
    dest = tmp_path / "d.img"
    with DiskWriter.open(dest, 10, block_size=4, force=False) as writer:
        writer.write_block(2, b"cc")
        writer.write_zeros(1)
        with pytest.raises(DestinationError, match="expected 4"):
            writer.write_block(0, b"a")
        with pytest.raises(DestinationError, match="out of range"):
            writer.write_block(3, b"dd")
        with pytest.raises(DestinationError, match="1 of 3 blocks never written"):
            writer.commit()
    assert not dest.exists() and _leftovers(tmp_path) == []
    with DiskWriter.open(dest, 10, block_size=4, force=False) as writer:
        writer.write_block(2, b"cc")
        writer.write_block(1, bytes(4))
        writer.write_block(0, b"aaaa")
        writer.commit()
    assert dest.read_bytes() == b"aaaa\0\0\0\0cc"
    assert writer.bytes_written == 6


def test_disk_writer_refuses_a_file_that_appears_during_restore(tmp_path: Path) -> None:
    dest = tmp_path / "d.img"
    writer = DiskWriter.open(dest, 4, block_size=4, force=False)
    writer.write_block(0, b"abcd")
    dest.write_bytes(b"someone else")
    with pytest.raises(DestinationError, match="appeared"):
        writer.commit()
    assert dest.read_bytes() == b"someone else"
    assert _leftovers(tmp_path) == []


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\xaa" * (len(SPARSE_IMAGE) // 4096 + 2) * 4096)
    with system.loop_device(backing) as device:
        yield device


def test_block_device_gets_every_block_written(
    repo: Repository, point: RestorePoint, loop_device: Path
) -> None:
    with pytest.raises(DestinationError, match="block device"):
        restore_disk(repo, point.id, "sda", loop_device, force=False)
    result = restore_disk(repo, point.id, "sda", loop_device, force=True)
    assert result.device
    assert result.bytes_written == len(SPARSE_IMAGE)
    with loop_device.open("rb") as device:
        data = device.read()
    assert data[: len(SPARSE_IMAGE)] == SPARSE_IMAGE
    tail = data[len(SPARSE_IMAGE) :]
    assert tail and tail == b"\xaa" * len(tail)


def test_a_restore_removes_what_a_killed_restore_to_the_same_destination_left(
    repo: Repository, point: RestorePoint, tmp_path: Path
) -> None:
    dest = tmp_path / "sda.img"
    killed = tmp_path / ".sda.img.restore-0badc0de.tmp"
    killed.write_bytes(b"half a disk")
    other = tmp_path / ".sdb.img.restore-0badc0de.tmp"
    other.write_bytes(b"another destination's")
    restore_disk(repo, point.id, "sda", dest, force=False)
    assert dest.read_bytes() == SPARSE_IMAGE
    assert _leftovers(tmp_path) == [other.name]
