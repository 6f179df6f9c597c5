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
from tests.system import small_tmpfs
from tests.unit.repository.repo_helpers import BLOCK_SIZE, backup, make_image, temporary_names


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "2m") as mount_point:
        yield mount_point


def _fill(path: Path) -> None:
    """Write a file until the file system is full."""
    with path.open("wb", buffering=0) as file:
        chunk = b"\xff" * 65536
        try:
            while True:
                file.write(chunk)
        except OSError:
            pass
        try:
            while True:
                file.write(b"\xff" * 512)
        except OSError:
            pass


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
    assert temporary_names(repo.path) == []

    repo.stage_fixed_index("s2", "sda", len(image), repo.read_fixed_index(first, "sda").digests)
    _fill(small_fs / "filler")

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
    assert temporary_names(repo.path) == []
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
