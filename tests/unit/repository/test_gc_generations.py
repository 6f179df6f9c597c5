"""The repository's generation: GC tells recent packs by it, never by a clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from blockferry.core.errors import RepositoryFull
from blockferry.repository import Repository, generations, layout
from blockferry.repository.gc import GcResult, collect_garbage
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.retention import Policy
from blockferry.repository.storage import ObjectInfo, Parts, Storage
from blockferry.repository.storage_views import StorageView
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    SkewedClock,
    backup,
    make_image,
    reopen,
    root,
)


def gc(repo: Repository, **options: object) -> GcResult:
    return collect_garbage(repo, pack_size=64 * BLOCK_SIZE, **options)  # type: ignore[arg-type]


def one_dead_pack(repo: Repository) -> str:
    """Two backups, the first pruned: its pack holds nothing live. Returns its id."""
    backup(repo, "j", {"sda": make_image("pq")})
    (dead,) = repo.sealed_pack_ids()
    backup(repo, "j", {"sda": make_image("rs")})
    repo.prune("j", Policy(keep_last=1))
    return dead


def test_each_gc_starts_a_generation_that_new_packs_record(repo: Repository) -> None:
    assert repo.generation() == 0
    backup(repo, "j", {"sda": make_image("ab")})
    assert gc(repo, dry_run=True).generation == 1
    assert repo.generation() == 0, "a dry run starts no generation"
    assert (gc(repo).generation, gc(repo).generation) == (1, 2)
    assert repo.generation() == 2
    backup(repo, "j", {"sda": make_image("cd")})
    stamps = sorted(repo.pack_footer(p).generation for p in repo.sealed_pack_ids())
    assert stamps == [0, 2]


def test_a_pack_stays_whole_for_the_grace_generations(repo: Repository) -> None:
    dead = one_dead_pack(repo)
    first = gc(repo, grace=1)  # the pack was sealed in generation 0: since the last GC
    assert (first.generation, first.protected_from, first.packs_removed) == (1, 0, 0)
    assert dead in repo.sealed_pack_ids()
    second = gc(repo, grace=1)
    assert (second.protected_from, second.packs_removed) == (1, 1)
    assert dead not in repo.sealed_pack_ids()


def test_packs_sealed_since_a_running_session_began_stay(repo: Repository) -> None:
    gc(repo)
    gc(repo)
    began = repo.generation()  # a session begins in generation 2
    dead = one_dead_pack(repo)
    gc(repo)
    kept = gc(repo, grace=0, keep_since=began)
    assert (kept.protected_from, kept.packs_removed) == (began, 0)
    assert dead in repo.sealed_pack_ids()
    assert gc(repo, grace=0, keep_since=began + 1).packs_removed == 1


@pytest.mark.parametrize("skew", [timedelta(days=-3650), timedelta(days=3650)])
@pytest.mark.local_only
def test_a_storage_clock_far_off_changes_nothing(repo: Repository, skew: timedelta) -> None:
    """With its clock ten years behind, recent packs would look ancient to a GC that
    compares times, and with it ten years ahead, dead packs would look new."""
    dead = one_dead_pack(repo)
    skewed = reopen(repo, SkewedClock(LocalStorage(root(repo)), skew))
    assert gc(skewed, grace=1).packs_removed == 0
    assert dead in skewed.sealed_pack_ids()
    assert gc(skewed, grace=1).packs_removed == 1


def test_a_backup_starting_begins_a_generation_and_gc_forgets_old_markers(
    repo: Repository,
) -> None:
    assert [repo.start_generation() for _ in range(3)] == [1, 2, 3]
    repo.storage.put(layout.GENERATIONS + "junk", b"")  # not a marker: ignored
    assert repo.generation() == 3
    assert gc(repo).generation == 4
    left = sorted(info.name for info in repo.storage.list_objects(layout.GENERATIONS))
    assert left == [layout.GENERATIONS + "0000000004", layout.GENERATIONS + "junk"]


def test_two_starting_at_once_share_a_generation(repo: Repository) -> None:
    """Both read generation 0 and both begin 1: the other process created the marker
    first, and we find it there."""
    raced = RacedStorage(repo.storage, raced=1)
    assert generations.start(raced) == 1
    assert repo.generation() == 1
    assert repo.start_generation() == 2


class RacedStorage(StorageView):
    """A storage on which another process creates generation marker ``raced`` between
    our reading the count and our creating it."""

    def __init__(self, base: Storage, raced: int) -> None:
        super().__init__(base)
        self.raced = raced

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        found = self.base.list_objects(prefix)
        if prefix == layout.GENERATIONS:
            self.base.put_new(f"{layout.GENERATIONS}{self.raced:010d}", b"")
        return found


class FullForMarkers(StorageView):
    """A storage with no room for a new generation marker."""

    def put_new(self, name: str, data: Parts) -> None:
        if name.startswith(layout.GENERATIONS):
            raise RepositoryFull(f"writing {self.where(name)}: no space left on device")
        self.base.put_new(name, data)


@pytest.mark.local_only
def test_gc_on_a_full_storage_runs_in_the_generation_now(repo: Repository) -> None:
    dead = one_dead_pack(repo)
    repo.start_generation()  # packs of generation 0 are one generation old
    full = reopen(repo, FullForMarkers(LocalStorage(root(repo))))
    result = gc(full, grace=0)
    assert (result.generation, result.protected_from, result.packs_removed) == (1, 1, 1)
    assert dead not in repo.sealed_pack_ids()
    assert repo.generation() == 1
