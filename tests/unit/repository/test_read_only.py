"""A repository opened read-only (restore, verify, check on media that must not change):
everything reads, nothing is written, every write is refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from blockferry.cli import main
from blockferry.core.blocks import digest
from blockferry.repository import Repository, check, restore_disk, verify
from blockferry.repository.gc import collect_garbage
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.pack import CHUNK_HEADER
from blockferry.repository.retention import Policy
from blockferry.repository.storage import StorageReadOnly
from blockferry.repository.storage_views import ReadOnlyStorage
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    block,
    flip_byte,
    make_image,
    pack_file,
    reopen,
    root,
)


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``directory``: its bytes and modification time."""
    return {
        path.relative_to(directory).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in directory.rglob("*")
        if path.is_file()
    }


@pytest.fixture
def damaged(repo: Repository) -> Repository:
    """Two restore points, one chunk of the second damaged."""
    backup(repo, "vm", {"sda": make_image("ab")})
    backup(repo, "vm", {"sda": make_image("ac")})
    entry = repo.locate(digest(block("c"), repo.config.dedupe_key))
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 5)
    return repo


@pytest.mark.local_only
def test_reads_work_and_write_nothing(damaged: Repository, tmp_path: Path) -> None:
    before = tree(root(damaged))
    repo = reopen(damaged, ReadOnlyStorage(LocalStorage(root(damaged))))
    healthy, hurt = repo.restore_points()
    report = verify(repo, lock=False)
    assert not report.ok and report.quarantined == []
    assert report.damaged_restore_points == [hurt.id]
    assert check(repo, lock=False).ok, "the structure is sound"
    out = tmp_path / "sda.img"
    restore_disk(repo, healthy.id, "sda", out, force=False, lock=False)
    assert out.read_bytes() == make_image("ab")
    assert tree(root(damaged)) == before, "not a byte, not a time changed"


WRITES: dict[str, Callable[[Repository], object]] = {
    "open a pack": lambda repo: repo.open_pack(),
    "take a lock": lambda repo: repo.shared_lock("restore").__enter__(),
    "verify with quarantine": lambda repo: verify(repo),
    "stage": lambda repo: repo.stage_fixed_index("s", "sda", BLOCK_SIZE, [b"\x01" * 32]),
    "prune": lambda repo: repo.prune("vm", Policy(keep_last=1)),
    "gc": lambda repo: collect_garbage(repo, grace=0, pack_size=1 << 20),
    "rebuild the index": lambda repo: repo.rebuild_index(),
    "quarantine": lambda repo: repo.quarantine(
        next(iter(repo.pack_entries(repo.sealed_pack_ids()[0]))), "test"
    ),
    "remove leftovers": lambda repo: repo.remove_leftovers(),
}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.local_only
def test_every_write_is_refused(damaged: Repository, write: str) -> None:
    before = tree(root(damaged))
    repo = reopen(damaged, ReadOnlyStorage(LocalStorage(root(damaged))))
    with pytest.raises(StorageReadOnly, match="open read-only"):
        WRITES[write](repo)
    assert tree(root(damaged)) == before


@pytest.mark.local_only
def test_cli_check_and_restore_read_only(damaged: Repository, tmp_path: Path) -> None:
    before = tree(root(damaged))
    unlock = []
    if damaged.config.encrypted:
        recovery = tmp_path / "recovery-key"
        recovery.write_text(damaged.recovery_key())
        unlock = ["--recovery-key-file", str(recovery)]
    runner = CliRunner()
    checked = runner.invoke(
        main,
        ["repo", "check", str(root(damaged)), "--read-data", "--read-only", "--json", *unlock],
    )
    assert checked.exit_code == 1, checked.output
    report = json.loads(checked.output)
    assert report["ok"] is False and report["quarantined"] == []
    healthy = damaged.restore_points()[0]
    out = tmp_path / "out.img"
    restored = runner.invoke(
        main,
        [
            "repo",
            "restore",
            str(root(damaged)),
            healthy.id,
            "--to",
            str(out),
            "--read-only",
            *unlock,
        ],
    )
    assert restored.exit_code == 0, restored.output
    assert out.read_bytes() == make_image("ab")
    assert tree(root(damaged)) == before
