"""Garbage collection: what no restore point references goes, whole packs or by
repacking; what is referenced, staged or recent stays, and restores stay identical."""

from __future__ import annotations

from pathlib import Path

from blockferry.core.blocks import digest
from blockferry.repository import Repository, restore_disk, verify
from blockferry.repository.gc import GcResult, collect_garbage
from blockferry.repository.retention import Policy
from tests.unit.repository.repo_helpers import BLOCK_SIZE, backup, block, make_image


def gc(repo: Repository, dry_run: bool = False) -> GcResult:
    return collect_garbage(repo, grace=0, pack_size=64 * BLOCK_SIZE, dry_run=dry_run)


def d(repo: Repository, ch: str) -> bytes:
    return digest(block(ch), repo.config.dedupe_key)


def restores(repo: Repository, rp_id: str, image: bytes, tmp_path: Path) -> bool:
    out = tmp_path / f"{rp_id}.img"
    restore_disk(repo, rp_id, "sda", out, force=False)
    return out.read_bytes() == image


def test_a_pack_nobody_references_is_deleted(repo: Repository, tmp_path: Path) -> None:
    first = backup(repo, "j", {"sda": make_image("pq")})
    second = backup(repo, "j", {"sda": make_image("rs")})
    repo.prune("j", Policy(keep_last=1))
    assert len(repo.sealed_pack_ids()) == 2

    result = gc(repo)
    assert (result.packs_removed, result.packs_repacked, result.chunks_removed) == (1, 0, 2)
    assert result.removed == sorted([d(repo, "p"), d(repo, "q")])
    assert result.bytes_freed > 2 * BLOCK_SIZE
    assert len(repo.sealed_pack_ids()) == 1
    assert repo.locate(d(repo, "p")) is None
    assert restores(repo, second.id, make_image("rs"), tmp_path)
    assert verify(repo).ok
    assert first.id not in {p.id for p in repo.restore_points()}


def test_a_mostly_dead_pack_is_repacked(repo: Repository, tmp_path: Path) -> None:
    backup(repo, "j", {"sda": make_image("abcd")})
    second = backup(repo, "j", {"sda": make_image("aefg")})  # a: deduplicated
    repo.prune("j", Policy(keep_last=1))
    old_packs = set(repo.sealed_pack_ids())

    result = gc(repo)
    assert (result.packs_removed, result.packs_repacked, result.chunks_removed) == (0, 1, 3)
    assert [entry.digest for entry in result.moved] == [d(repo, "a")]
    assert result.removed == sorted([d(repo, "b"), d(repo, "c"), d(repo, "d")])
    assert len(old_packs & set(repo.sealed_pack_ids())) == 1, "the mostly dead pack went"
    assert restores(repo, second.id, make_image("aefg"), tmp_path)
    assert verify(repo).ok


def test_a_mostly_live_pack_stays(repo: Repository) -> None:
    backup(repo, "j", {"sda": make_image("abcd")})
    backup(repo, "j", {"sda": make_image("abce")})
    repo.prune("j", Policy(keep_last=1))
    packs = repo.sealed_pack_ids()
    result = gc(repo)
    assert (result.packs_removed, result.packs_repacked, result.chunks_removed) == (0, 0, 0)
    assert repo.sealed_pack_ids() == packs


def test_staged_and_recent_chunks_stay_and_a_dry_run_changes_nothing(repo: Repository) -> None:
    backup(repo, "j", {"sda": make_image("pqrs")})
    backup(repo, "j", {"sda": make_image("tu")})
    repo.prune("j", Policy(keep_last=1))
    packs = repo.sealed_pack_ids()

    dry = gc(repo, dry_run=True)
    assert (dry.packs_removed, dry.chunks_removed) == (1, 4)
    assert repo.sealed_pack_ids() == packs

    recent = collect_garbage(repo, keep_since=0, pack_size=BLOCK_SIZE)
    assert (recent.packs_recent, recent.packs_removed) == (2, 0)

    # a session between its end marker and its commit references p
    repo.stage_fixed_index("running", "sda", BLOCK_SIZE, [d(repo, "p")])
    staged = gc(repo)
    assert (staged.packs_removed, staged.packs_repacked, staged.chunks_removed) == (0, 1, 3)
    assert repo.locate(d(repo, "p")) is not None
    assert repo.locate(d(repo, "q")) is None
