"""The file systems of a disk image as DiskFiles reads them (no repository: the image
file itself), on partition tables and whole disks made by the tools of each."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from blockferry.core.errors import FileSystemError, RepositoryFull
from blockferry.files.catalog import build_catalog, find
from blockferry.files.disk_files import DiskFiles
from blockferry.repository import Repository, restore_disk
from blockferry.repository.catalog import read_catalog
from blockferry.repository.locks import LockKind
from tests.disk_images import Partition, ext4, fat, partitioned, source_tree
from tests.system import small_tmpfs
from tests.unit.repository.repo_helpers import (
    backup,
    fill_file_system,
    root,
    temporary_names,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_tree(tmp_path_factory.mktemp("tree") / "tree")


def test_an_mbr_disk_lists_each_partition_with_its_file_system(tree: Path, tmp_path: Path) -> None:
    fat_tree = source_tree(tmp_path / "fat-tree", posix=False)
    parts = [
        Partition(ext4(tree, tmp_path / "ext4.img", 16)),
        Partition(fat(fat_tree, tmp_path / "fat.img", 16), "c"),
    ]
    disk = partitioned(tmp_path / "mbr.img", parts, label="dos")
    with disk.open("rb") as image:
        files = DiskFiles(image, "mbr.img")
        assert [(v.name, v.filesystem) for v in files.volumes] == [("p1", "ext"), ("p2", "fat")]
        assert files.open("/p1/etc/hostname").read() == b"restored-vm\n"
        assert files.open("/p2/ETC/HOSTNAME").read() == b"restored-vm\n"


def test_a_file_system_on_the_whole_disk_is_the_volume_disk(tree: Path, tmp_path: Path) -> None:
    with ext4(tree, tmp_path / "whole.img", 16).open("rb") as image:
        files = DiskFiles(image, "whole.img")
        assert [v.name for v in files.volumes] == ["disk"]
        link = files.stat("/disk/etc/current")
        assert (link.kind, link.target) == ("symlink", "app/config.yaml")
        small = files.stat("/disk/data/small.bin")
        assert (small.uid, small.gid, stat.S_IMODE(small.mode)) == (1000, 1001, 0o644)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/p9/etc", "has no volume 'p9'"),
        ("/disk/etc/../data", "may not contain"),
        ("/disk/etc/nothing", "no /disk/etc/nothing"),
    ],
)
def test_a_path_that_is_not_there_is_a_clear_error(
    tree: Path, tmp_path: Path, path: str, error: str
) -> None:
    with ext4(tree, tmp_path / "whole.img", 16).open("rb") as image:
        files = DiskFiles(image, "whole.img")
        with pytest.raises(FileSystemError, match=error):
            files.list(path)


def test_listing_a_file_or_opening_a_directory_is_refused(tree: Path, tmp_path: Path) -> None:
    with ext4(tree, tmp_path / "whole.img", 16).open("rb") as image:
        files = DiskFiles(image, "whole.img")
        with pytest.raises(FileSystemError, match="not a directory"):
            files.list("/disk/etc/hostname")
        with pytest.raises(FileSystemError, match="not a regular file"):
            files.open("/disk/etc")


def test_a_disk_without_a_file_system_says_so(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4 * 1024 * 1024))
    with blank.open("rb") as image, pytest.raises(FileSystemError, match="no file system"):
        DiskFiles(image, "blank.img")


def test_a_catalog_on_a_full_file_system_fails_and_loses_nothing(
    tree: Path, tmp_path: Path
) -> None:
    """The catalog is built (a pin, then the catalog object) on a repository whose file
    system is full: a clear error, the restore point restores, nothing is left behind."""
    image = partitioned(tmp_path / "disk.img", [Partition(ext4(tree, tmp_path / "fs.img", 16))])
    with small_tmpfs(tmp_path / "small", "12m") as mount_point:
        repo = Repository.init(mount_point / "repo", block_size=256 * 1024, shard_count=1)
        point = backup(repo, "vm", {"sda": image.read_bytes()})
        fill_file_system(mount_point / "filler")
        with pytest.raises(RepositoryFull):
            build_catalog(repo, point.id)
        assert read_catalog(repo.storage, point) is None
        assert temporary_names(root(repo)) == []
        assert not [lock for lock in repo.locks.list_locks() if lock.kind is LockKind.PIN]
        (mount_point / "filler").unlink()
        restored = tmp_path / "restored.img"
        restore_disk(repo, point.id, "sda", restored, force=False)
        assert restored.read_bytes() == image.read_bytes()
        assert build_catalog(repo, point.id) > 10
        found, missing = find(repo, "small.bin")
        assert ([f.path for f in found], missing) == (["/p1/data/small.bin"], [])
