"""Damage heals: a chunk that fails its checks is quarantined, the next backup that has
the block stores it again, and every older restore point naming it is whole again."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core.blocks import digest
from blockferry.core.errors import CorruptionError
from blockferry.repository import DamageKind, Repository, restore_disk, verify
from blockferry.repository.gc import collect_garbage
from blockferry.repository.pack import CHUNK_HEADER
from blockferry.repository.retention import Policy
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    block,
    flip_byte,
    make_image,
    pack_file,
    root,
)


def d(repo: Repository, ch: str) -> bytes:
    return digest(block(ch), repo.config.dedupe_key)


def damage_chunk(repo: Repository, ch: str) -> None:
    """Flip one byte inside the stored bytes of the chunk of block ``ch``."""
    entry = repo.locate(d(repo, ch))
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 100)


def restores(repo: Repository, rp_id: str, image: bytes, tmp_path: Path) -> bool:
    out = tmp_path / f"{rp_id}.img"
    out.unlink(missing_ok=True)
    restore_disk(repo, rp_id, "sda", out, force=False)
    return out.read_bytes() == image


@pytest.mark.local_only
def test_a_damaged_chunk_is_quarantined_and_the_next_backup_heals_it(
    repo: Repository, tmp_path: Path
) -> None:
    image = make_image("abc")
    old = backup(repo, "j", {"sda": image})
    damage_chunk(repo, "b")

    found = verify(repo)
    assert [(x.kind, x.digest) for x in found.damage] == [(DamageKind.CHUNK, d(repo, "b").hex())]
    assert "quarantined" in found.damage[0].detail
    assert [entry.digest for entry in found.quarantined] == [d(repo, "b")]
    assert repo.locate(d(repo, "b")) is None, "a damaged copy is never located again"
    again = verify(repo)
    assert [x.kind for x in again.damage] == [DamageKind.MISSING_CHUNK]

    # the next backup of the same data finds b missing and stores it again
    backup(repo, "j", {"sda": image}, parent=old.id)
    healed = verify(repo)
    assert healed.ok, healed.summary()
    assert restores(repo, old.id, image, tmp_path), "the old restore point is whole again"

    # once nothing names the pack with the damaged copy, GC deletes it and its quarantine
    backup(repo, "j", {"sda": make_image("xy")})
    repo.prune("j", Policy(keep_last=1))
    result = collect_garbage(repo, grace=0, pack_size=64 * BLOCK_SIZE)
    assert result.packs_removed == 2  # a with the damaged b, and the good b
    assert list((root(repo) / "quarantine").iterdir()) == []
    assert verify(repo).ok


@pytest.mark.local_only
def test_gc_quarantines_a_damaged_chunk_it_should_copy_instead_of_failing(
    repo: Repository,
) -> None:
    backup(repo, "j", {"sda": make_image("abcd")})
    newest = backup(repo, "j", {"sda": make_image("aef")})
    repo.prune("j", Policy(keep_last=1))  # a stays live: its pack is repacked
    damage_chunk(repo, "a")
    result = collect_garbage(repo, grace=0, pack_size=64 * BLOCK_SIZE)
    assert result.moved == []
    assert repo.locate(d(repo, "a")) is None
    report = verify(repo)
    assert [(x.kind, x.restore_points) for x in report.damage] == [
        (DamageKind.MISSING_CHUNK, (newest.id,))
    ]
    backup(repo, "j", {"sda": make_image("aef")}, parent=newest.id)
    assert verify(repo).ok


@pytest.mark.local_only
def test_a_read_only_verify_quarantines_nothing(repo: Repository) -> None:
    backup(repo, "j", {"sda": make_image("ab")})
    damage_chunk(repo, "a")
    report = verify(repo, lock=False)
    assert not report.ok and report.quarantined == []
    assert repo.locate(d(repo, "a")) is not None


@pytest.mark.local_only
def test_a_restore_that_meets_a_damaged_chunk_quarantines_it(
    repo: Repository, tmp_path: Path
) -> None:
    image = make_image("ab")
    point = backup(repo, "j", {"sda": image})
    damage_chunk(repo, "b")
    with pytest.raises(CorruptionError, match="quarantined"):
        restore_disk(repo, point.id, "sda", tmp_path / "out.img", force=False)
    assert not (tmp_path / "out.img").exists()
    assert repo.locate(d(repo, "b")) is None
    backup(repo, "j", {"sda": image}, parent=point.id)
    assert restores(repo, point.id, image, tmp_path)
