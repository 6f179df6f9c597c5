"""A full file system: RepositoryFull, no temporary files, committed data intact.

Needs a small file system of its own: a 2 MiB tmpfs, mounted as root.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.core.blocks import digest
from blockferry.core.errors import RepositoryFull
from blockferry.repository import Repository, restore_disk, verify
from blockferry.repository.gc import collect_garbage
from blockferry.repository.retention import Policy
from tests.system import small_tmpfs
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    fill_file_system,
    make_image,
    root,
    temporary_names,
)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "2m") as mount_point:
        yield mount_point


def test_full_file_system(small_fs: Path, tmp_path: Path) -> None:
    repo = Repository.init(small_fs / "repo", block_size=BLOCK_SIZE, shard_count=1)
    image = make_image("aB0", tail=10)
    first = backup(repo, "vm", {"sda": image})

    # A pack that outgrows the file system is aborted whole.
    writer = repo.open_pack()
    rng = random.Random(1)
    with pytest.raises(RepositoryFull, match="no space left") as caught:
        for _ in range(20):
            data = rng.randbytes(BLOCK_SIZE)
            writer.add(digest(data, repo.config.dedupe_key), data, False, len(data))
    assert str(small_fs) in str(caught.value)
    assert not writer.is_open
    assert temporary_names(root(repo)) == []

    repo.stage_fixed_index("s2", "sda", len(image), repo.read_fixed_index(first, "sda").digests)
    fill_file_system(small_fs / "filler")

    with pytest.raises(RepositoryFull):
        repo.stage_fixed_index("s3", "sda", len(image), repo.read_fixed_index(first, "sda").digests)
    with pytest.raises(RepositoryFull):
        repo.commit_restore_point(
            job="vm", session_id="s2", disks=["sda"], parent=first.id, stats={}
        )
    with pytest.raises(RepositoryFull):
        pack = repo.open_pack()
        data = rng.randbytes(BLOCK_SIZE)
        pack.add(digest(data, repo.config.dedupe_key), data, False, len(data))
    assert temporary_names(root(repo)) == []
    assert repo.restore_points() == [first]
    assert verify(repo, lock=False).ok
    restored = tmp_path / "sda.img"
    restore_disk(repo, first.id, "sda", restored, force=False, lock=False)
    assert restored.read_bytes() == image

    # Space again: the staged session commits, earlier restore points still verify.
    (small_fs / "filler").unlink()
    second = repo.commit_restore_point(
        job="vm", session_id="s2", disks=["sda"], parent=first.id, stats={}
    )
    assert repo.restore_points() == [first, second]
    report = verify(repo)
    assert report.ok and sorted(report.restore_points) == sorted([first.id, second.id])


def test_prune_and_gc_free_a_full_file_system(tmp_path: Path) -> None:
    """At 100% full, prune and GC still take their lock (the lock reserve), delete the
    wholly dead packs first, and so have room to repack a mostly dead one."""
    with small_tmpfs(tmp_path / "small", "8m") as mount_point:
        repo = Repository.init(mount_point / "repo", block_size=BLOCK_SIZE, shard_count=1)
        backup(repo, "vm", {"sda": make_image("pq")})  # wholly dead after prune
        backup(repo, "vm", {"sda": make_image("abcd")})  # a stays live: repacked
        newest = backup(repo, "vm", {"sda": make_image("aef")})
        with repo.shared_lock():
            pass  # a released lock leaves the reserve in place
        fill_file_system(mount_point / "filler")
        with pytest.raises(RepositoryFull):
            repo.stage_fixed_index("s9", "sda", BLOCK_SIZE, [digest(b"x", repo.config.dedupe_key)])

        pruned = repo.prune("vm", Policy(keep_last=1))
        assert len(pruned.removed) == 2
        result = collect_garbage(repo, grace=0, pack_size=64 * BLOCK_SIZE)
        assert (result.packs_removed, result.packs_repacked, result.chunks_removed) == (1, 1, 5)
        assert repo.restore_points() == [newest]
        assert verify(repo).ok
        restored = tmp_path / "sda.img"
        restore_disk(repo, newest.id, "sda", restored, force=False)
        assert restored.read_bytes() == make_image("aef")
        assert temporary_names(root(repo)) == []
