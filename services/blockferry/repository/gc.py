"""Garbage collection: the only thing that ever deletes a chunk.

Runs under the repository's exclusive lock, so no fixed index is staged and no
restore reads meanwhile. A chunk is live when a committed restore point's fixed index
or a staged one (a session between its disk's end marker and its commit) names it.
GC first begins a generation of the repository (:mod:`generations`). Packs sealed in
recent generations are left whole: they may hold chunks a running session sent but
has not referenced yet. Recent means sealed in the generation the oldest running
session began (the orchestrator passes it) or later, and in any case within the last
``grace`` generations before this GC's. No clock is compared. A session that counted
on a chunk GC removed (deduplicated against the index before GC ran) finds it missing
at its disk's end marker and sends it again, so nothing is ever committed without its
chunks.

A pack with no live chunk is deleted; a pack whose live chunks take less than
``repack_below`` of its bytes is repacked: the live chunks are copied into new packs
(sealed and indexed first), then the old pack goes. Other packs stay as they are.
Wholly dead packs go before anything is copied, so GC frees space on a full disk.

What GC cannot read it never takes for garbage: a restore point, fixed index, staged
fixed index or pack footer that does not parse stops it before it deletes anything,
naming the file. Before each deletion it checks that its lock is still its own
(fencing): a GC whose lock was taken over after it stalled stops there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from blockferry.core.errors import CorruptionError, RepositoryFull
from blockferry.failpoints import Point
from blockferry.repository import generations
from blockferry.repository.damaged import set_aside_digests
from blockferry.repository.locks import HeldLock
from blockferry.repository.pack import PackEntry, PackWriter, SealedPack
from blockferry.repository.pack_index import list_quarantined
from blockferry.repository.repository import REPAIR_HINT, Repository

log = logging.getLogger(__name__)

LOCK_WAIT_S = 60.0
LEFTOVER_AGE_S = 3600.0
"""Temporaries GC removes are at least this old, even where their writer's liveness
cannot be told (a file system without working flock)."""


@dataclass
class GcResult:
    packs_removed: int = 0
    packs_repacked: int = 0
    packs_recent: int = 0
    """Packs left whole because they were sealed in a recent generation."""
    generation: int = 0
    """The generation this GC began (a dry run: would begin)."""
    protected_from: int = 0
    """Packs of this generation and later were left whole."""
    chunks_removed: int = 0
    bytes_freed: int = 0
    removed: list[bytes] = field(default_factory=list)
    """Digests no longer stored anywhere (their changelog entries get tombstones)."""
    moved: list[PackEntry] = field(default_factory=list)
    """New places of the chunks repacking copied."""

    def summary(self) -> dict[str, int]:
        return {
            "packs_removed": self.packs_removed,
            "packs_repacked": self.packs_repacked,
            "packs_recent": self.packs_recent,
            "chunks_removed": self.chunks_removed,
            "chunks_moved": len(self.moved),
            "bytes_freed": self.bytes_freed,
            "generation": self.generation,
            "protected_from": self.protected_from,
        }


def live_digests(repo: Repository) -> set[bytes]:
    """Every digest a staged or committed fixed index names, and those of the fixed
    indexes set aside in ``damaged/``.

    Staging is read before the restore points: a commit creates its restore point
    before it removes its staging, so a commit between the two reads is seen at least
    once (commits also wait for GC's exclusive lock; this order does not rely on it).

    Raises:
        CorruptionError: naming the first file that cannot be read.
    """
    live: set[bytes] = set()
    for fidx in repo.staged_fixed_indexes():
        live.update(fidx.digests)
    repo.hooks.reached(Point.GC_HALF_SCANNED)
    for point in repo.restore_points(strict=True):
        for disk in point.disk_names:
            live.update(repo.read_fixed_index(point, disk).digests)
    live |= set_aside_digests(repo)
    return live


@dataclass
class _Plan:
    dead_packs: list[str] = field(default_factory=list)
    """Packs with no live chunk: deleted first, which frees space before anything is copied."""
    repacked: list[str] = field(default_factory=list)
    to_copy: list[PackEntry] = field(default_factory=list)
    """The live chunks of the repacked packs."""
    dead: list[PackEntry] = field(default_factory=list)


def _plan(
    repo: Repository, live: set[bytes], protected_from: int, repack_below: float
) -> tuple[_Plan, GcResult]:
    plan, result = _Plan(), GcResult()
    quarantined = list_quarantined(repo.storage)
    for pack_id, info in sorted(repo.sealed_packs().items()):
        footer = repo.pack_footer(pack_id)
        if footer.generation >= protected_from:
            result.packs_recent += 1
            continue
        entries = footer.entries
        # a quarantined copy failed its checksum or digest: it can never serve a restore
        kept = [e for e in entries if e.digest in live and (pack_id, e.digest) not in quarantined]
        if len(kept) == len(entries):
            continue
        kept_bytes = sum(e.stored_size for e in kept)
        if kept and kept_bytes >= repack_below * sum(e.stored_size for e in entries):
            continue
        (plan.repacked if kept else plan.dead_packs).append(pack_id)
        plan.to_copy += kept
        kept_digests = {e.digest for e in kept}
        plan.dead += [e for e in entries if e.digest not in kept_digests]
        result.bytes_freed += info.size
    result.packs_removed = len(plan.dead_packs)
    result.packs_repacked = len(plan.repacked)
    result.chunks_removed = len(plan.dead)
    return plan, result


def collect_garbage(
    repo: Repository,
    *,
    pack_size: int,
    grace: int = 1,
    keep_since: int | None = None,
    repack_below: float = 0.5,
    dry_run: bool = False,
) -> GcResult:
    """Delete what no restore point references; see the module's docstring.

    The packs of the ``grace`` generations before this GC's are left whole (0: only
    those sealed while it runs), and those of generation ``keep_since`` (the one the
    oldest running session began) and later. A dry run begins no generation; it
    reports what a GC would do now.

    Raises:
        CorruptionError: a restore point, fixed index, staged fixed index or pack
            cannot be read; nothing was deleted.
        LockError: the lock was taken over (it went stale) before a deletion; GC
            stopped there.
    """
    with repo.exclusive_lock("gc", wait=LOCK_WAIT_S) as held:
        try:
            generation = repo.generation() + 1 if dry_run else _start_generation(repo, held)
            protected_from = generation - grace
            if keep_since is not None:
                protected_from = min(protected_from, keep_since)
            repo.refresh_index()
            live = live_digests(repo)
            plan, result = _plan(repo, live, protected_from, repack_below)
        except CorruptionError as exc:
            raise CorruptionError(
                f"garbage collection stopped, nothing was deleted: {exc}. {REPAIR_HINT}"
            ) from exc
        result.generation, result.protected_from = generation, protected_from
        repo.hooks.reached(Point.GC_SCANNED)
        if dry_run:
            return result
        repo.remove_packs(plan.dead_packs, held)
        repo.hooks.reached(Point.GC_DEAD_PACKS_REMOVED)
        copies = _copy(repo, plan.to_copy, pack_size)
        repo.hooks.reached(Point.GC_REPACKED)
        result.moved = [entry for sealed in copies for entry in sealed.entries]
        result.bytes_freed -= sum(sealed.size for sealed in copies)
        repo.remove_packs(plan.repacked, held)
        gone = plan.dead + plan.to_copy  # a chunk GC could not copy was quarantined
        result.removed = sorted({e.digest for e in gone if repo.locate(e.digest) is None})
        # no commit or fixed index is being written now: a restore point without its
        # marker is a killed commit's, and the staging of a session committed already
        # is a leftover
        held.check()
        repo.remove_leftovers(min_age=LEFTOVER_AGE_S)
        repo.restore_point_store.remove_unmarked()
        repo.discard_committed_staging()
    repo.hooks.reached(Point.GC_DONE)
    log.info("garbage collection: %s", result.summary())
    return result


def _start_generation(repo: Repository, held: HeldLock) -> int:
    """Begin GC's generation; on a full storage, where its marker cannot be made, GC
    runs in the generation now (packs sealed meanwhile then carry GC's own generation,
    which it keeps), so it can still free space."""
    held.check()
    try:
        generation = repo.start_generation()
    except RepositoryFull:
        log.warning("garbage collection on a full storage: no new generation begun")
        return repo.generation()
    generations.forget_before(repo.storage, generation)
    return generation


def _copy(repo: Repository, entries: list[PackEntry], pack_size: int) -> list[SealedPack]:
    """Copy chunks into new packs, sealed (and indexed) before anything is removed. A
    chunk whose copy turns out damaged is quarantined instead of copied."""
    sealed: list[SealedPack] = []
    writer: PackWriter | None = None
    try:
        for entry in entries:
            try:
                stored = repo.read_stored(entry)
            except CorruptionError as exc:
                repo.quarantine(entry, f"garbage collection could not copy it: {exc}")
                continue
            if writer is None:
                writer = repo.open_pack()
            writer.copy(entry, stored)
            if writer.size >= pack_size:
                sealed.append(writer.seal())
                writer = None
        if writer is not None:
            sealed.append(writer.seal())
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return sealed
