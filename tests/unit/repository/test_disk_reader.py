"""Random access to a restore point's disk (DiskReader) and the pins that keep it while
it is read: on every backend, under prune and a concurrent GC."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pytest

from blockferry.core.errors import CorruptionError, LockBusy, RestorePointNotFound
from blockferry.repository import Repository, RestorePoint
from blockferry.repository import repository as repository_module
from blockferry.repository.disk_reader import DiskFile, DiskReader, Extent
from blockferry.repository.gc import collect_garbage
from blockferry.repository.locks import LockKind
from blockferry.repository.retention import Policy
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    child_args,
    flip_byte,
    make_image,
    pack_file,
    reopen,
)

IMAGE = make_image("ab0cD00eF", tail=5000)


@pytest.fixture
def point(repo: Repository) -> RestorePoint:
    committed: RestorePoint = backup(repo, "vm", {"sda": IMAGE})
    return committed


def test_any_range_reads_as_the_image(repo: Repository, point: RestorePoint) -> None:
    rng = random.Random(7)
    with DiskReader(repo, point, "sda") as reader:
        assert reader.size == len(IMAGE)
        ranges = [(0, len(IMAGE)), (len(IMAGE) - 10, 100), (BLOCK_SIZE - 1, 2), (0, 0)]
        ranges += [(rng.randrange(len(IMAGE)), rng.randrange(3 * BLOCK_SIZE)) for _ in range(30)]
        for offset, length in ranges:
            assert reader.read(offset, length) == IMAGE[offset : offset + length]
        assert reader.read(len(IMAGE) + 5, 10) == b""


def test_a_read_fetches_only_the_chunks_it_touches(repo: Repository, point: RestorePoint) -> None:
    with DiskReader(repo, point, "sda", read_ahead=0) as reader:
        reader.read(3 * BLOCK_SIZE + 10, 20)  # block 3: "c"
        assert reader.blocks_fetched == 1
        reader.read(3 * BLOCK_SIZE, 100)  # cached
        reader.read(2 * BLOCK_SIZE, BLOCK_SIZE)  # a zero block has no chunk
        assert reader.blocks_fetched == 1


def test_the_cache_is_bounded(repo: Repository, point: RestorePoint) -> None:
    with DiskReader(repo, point, "sda", read_ahead=0, cache_bytes=2 * BLOCK_SIZE) as reader:
        for index in (0, 1, 3, 0):
            reader.read(index * BLOCK_SIZE, 1)
        # 0, 1, 3 fetched; 0 was pushed out by 3 with room for two blocks
        assert reader.blocks_fetched == 4


def test_sequential_reads_fetch_ahead(repo: Repository, point: RestorePoint) -> None:
    with DiskReader(repo, point, "sda", read_ahead=4) as reader:
        reader.read(0, BLOCK_SIZE)
        reader.read(BLOCK_SIZE, BLOCK_SIZE)
        reader.close()  # waits for what was read ahead
        fetched = reader.blocks_fetched
        assert fetched >= 3, "blocks after a sequential read were fetched ahead"
        assert reader.read(3 * BLOCK_SIZE, BLOCK_SIZE) == IMAGE[3 * BLOCK_SIZE : 4 * BLOCK_SIZE]
        assert reader.blocks_fetched == fetched, "the block read ahead came from the cache"


def test_extents_report_zero_blocks_without_reading(repo: Repository, point: RestorePoint) -> None:
    with DiskReader(repo, point, "sda") as reader:
        assert reader.extents(0, len(IMAGE)) == [
            Extent(0, 2 * BLOCK_SIZE, False),
            Extent(2 * BLOCK_SIZE, BLOCK_SIZE, True),
            Extent(3 * BLOCK_SIZE, 2 * BLOCK_SIZE, False),
            Extent(5 * BLOCK_SIZE, 2 * BLOCK_SIZE, True),
            Extent(7 * BLOCK_SIZE, len(IMAGE) - 7 * BLOCK_SIZE, False),
        ]
        assert reader.extents(BLOCK_SIZE + 1, BLOCK_SIZE) == [
            Extent(BLOCK_SIZE + 1, BLOCK_SIZE - 1, False),
            Extent(2 * BLOCK_SIZE, 1, True),
        ]
        assert reader.blocks_fetched == 0


def test_the_disk_as_a_file(repo: Repository, point: RestorePoint) -> None:
    with DiskReader(repo, point, "sda") as reader:
        disk = io.BufferedReader(DiskFile(reader), buffer_size=4096)
        disk.seek(BLOCK_SIZE - 3)
        assert disk.read(6) == IMAGE[BLOCK_SIZE - 3 : BLOCK_SIZE + 3]
        assert disk.seek(-4, io.SEEK_END) == len(IMAGE) - 4
        assert disk.read() == IMAGE[-4:]


@pytest.mark.local_only
def test_a_damaged_chunk_fails_the_reads_that_touch_it(
    repo: Repository, point: RestorePoint
) -> None:
    entry = repo.locate(repo.read_fixed_index(point, "sda").digests[3])
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + 100)
    with DiskReader(repo, point, "sda") as reader:
        with pytest.raises(CorruptionError, match="chunk"):
            reader.read(3 * BLOCK_SIZE, 10)
        assert reader.read(0, BLOCK_SIZE) == IMAGE[:BLOCK_SIZE], "the rest still reads"


def test_a_pinned_restore_point_survives_prune_and_gc(
    repo: Repository, point: RestorePoint
) -> None:
    newer = backup(repo, "vm", {"sda": make_image("xyz")})
    exporter = reopen(repo)
    pin = exporter.pin(point.id, "export")
    with DiskReader(exporter, point, "sda", read_ahead=0) as reader:
        reader.read(0, 1)  # the index is loaded, then GC repacks under the reader
        result = repo.prune("vm", Policy(keep_last=1))
        assert result.removed == []
        assert result.kept[point.id] == ["pinned"]
        collect_garbage(repo, pack_size=1 << 20, grace=0, repack_below=1.0)
        assert reader.read(0, len(IMAGE)) == IMAGE
    pin.release()
    assert repo.prune("vm", Policy(keep_last=1)).removed == [point.id]
    assert [p.id for p in repo.restore_points("vm")] == [newer.id]


def test_gc_runs_while_a_restore_point_is_pinned_and_moves_its_chunks(
    repo: Repository,
) -> None:
    """A pin holds no lock that stops GC, and a chunk GC moved is read at its new place."""
    image = make_image("ab0cD00eF")
    backup(repo, "tmp", {"sda": image + make_image("pq")})  # one pack, shared below
    point = backup(repo, "vm", {"sda": image})
    backup(repo, "tmp", {"sda": make_image("rs")})
    exporter = reopen(repo)  # as the export's process would
    with (
        exporter.pin(point.id, "export"),
        DiskReader(exporter, point, "sda", read_ahead=0) as reader,
    ):
        reader.read(0, 1)  # the exporter's pack index is loaded now
        assert len(repo.prune("tmp", Policy(keep_last=1)).removed) == 1
        result = collect_garbage(repo, pack_size=1 << 20, grace=0, repack_below=1.0)
        assert result.packs_repacked == 1, "the live chunks of vm were moved"
        assert reader.read(0, len(image)) == image


def test_pinning_a_restore_point_that_is_not_there_fails(repo: Repository) -> None:
    with pytest.raises(RestorePointNotFound):
        repo.pin("20260101T000000Z-00000000", "export")
    assert not [lock for lock in repo.locks.list_locks() if lock.kind is LockKind.PIN]


@pytest.mark.local_only
def test_the_pin_of_a_dead_process_does_not_keep_a_restore_point(
    repo: Repository, point: RestorePoint
) -> None:
    backup(repo, "vm", {"sda": make_image("xyz")})
    pinned_by_child = (
        "import sys\n"
        "from tests.unit.repository.repo_helpers import open_from_args\n"
        "repo = open_from_args(sys.argv[2:])\n"
        "repo.pin(sys.argv[1], 'export')\n"  # then exits without releasing
    )
    subprocess.run([sys.executable, "-c", pinned_by_child, point.id, *child_args(repo)], check=True)
    assert [lock.restore_point for lock in repo.locks.list_locks()] == [point.id]
    assert repo.locks.pins() == set(), "its holder is gone"
    assert repo.prune("vm", Policy(keep_last=1)).removed == [point.id]


def test_a_pin_waits_for_a_prune_under_way_not_for_a_gc(
    repo: Repository, point: RestorePoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "PIN_WAIT_S", 0.3)
    with repo.locks.exclusive("gc"):
        repo.pin(point.id, "export").release()
    with repo.locks.exclusive("prune vm"), pytest.raises(LockBusy, match="prune vm"):
        repo.pin(point.id, "export")
    assert not [lock for lock in repo.locks.list_locks() if lock.kind is LockKind.PIN]
