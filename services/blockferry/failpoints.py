"""Failpoints: the named steps of every multi-step write, where a process armed by its
settings kills itself with SIGKILL, to prove that a crash at any step loses nothing.

Production code calls :func:`reached` at each point. Unarmed and without a hit log
(the default) that is one attribute test. A process is armed with the setting
``failpoints`` (``BLOCKFERRY_FAILPOINTS='["pack.published@2"]'``): it SIGKILLs itself the
second time it reaches ``pack.published`` (``@N`` defaults to 1). With ``failpoint_log``
set, every point reached is appended to that file as a line ``<point> <pid> <hit>``,
the fatal one as ``<point> <pid> <hit> kill`` (written and fsynced before the signal),
so a test or ``make soak`` knows which points a run went through.

The same :class:`Point` names the places where tests attach hooks inside one process
(``repository.hooks``).
"""

from __future__ import annotations

import enum
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


class Point(enum.StrEnum):
    """Every failpoint, in the order of the work it interrupts."""

    PACK_FOOTER_WRITTEN = "pack.footer-written"
    """A pack's footer is written to its writer; the pack is not published yet."""
    PACK_PUBLISHED = "pack.published"
    """A pack is published whole; its index file is not written yet."""
    PACK_SEALED = "pack.sealed"
    """A pack and its index file are in place; its entries are not on the changelog."""
    CHANGELOG_PUBLISHED = "changelog.published"
    """A sealed pack's entries are on the index changelog; the chunk offsets past it are
    not committed."""
    CHUNK_OFFSETS_COMMITTED = "chunks.offsets-committed"
    """The chunk consumer committed the offsets past a sealed pack."""
    DEDUPE_INDEX_APPLIED = "dedupe-index.applied"
    """The dedupe index stored a batch of changelog records (and the offset after them)."""
    DEDUPE_INDEX_ANSWERED = "dedupe-index.answered"
    """The dedupe index answered a batch of lookups; their offsets are not committed."""
    STAGE_WRITTEN = "stage.written"
    """A disk's fixed index is staged; the disk's end is not acknowledged yet."""
    COMMIT_STARTED = "commit.started"
    """A commit is about to write its restore point's fixed indexes (none written yet)."""
    COMMIT_INDEXES_WRITTEN = "commit.indexes-written"
    """A commit wrote its restore point's fixed indexes; the commit marker
    (restorepoint.json) is written next."""
    COMMIT_MARKED = "commit.marked"
    """A restore point's commit marker is written; the session's staging is not removed
    yet."""
    COMMIT_DONE = "commit.done"
    """A restore point is committed and its staging removed; nobody was told yet."""
    PRUNE_DECIDED = "prune.decided"
    """Prune knows which restore points go and has removed none yet."""
    PRUNE_REMOVED_ONE = "prune.removed-one"
    """Prune removed one restore point (of possibly several)."""
    GC_HALF_SCANNED = "gc.half-scanned"
    """GC has read one of its two sources of live digests (staged fixed indexes, then
    committed restore points) and not yet the other."""
    GC_SCANNED = "gc.scanned"
    """GC knows what is live and which packs go, and has deleted nothing yet."""
    GC_DEAD_PACKS_REMOVED = "gc.dead-packs-removed"
    """GC has deleted the packs with nothing live and not yet repacked any."""
    GC_REPACKED = "gc.repacked"
    """GC sealed the copies of the live chunks of the packs it repacks, and has not
    removed those packs yet."""
    GC_DONE = "gc.done"
    """GC removed what it removes; the tombstones of the chunks gone are not published."""
    RESTORE_BLOCK_WRITTEN = "restore.block-written"
    """A restore wrote one block to its temporary destination."""
    RESTORE_WRITTEN = "restore.written"
    """A restore wrote every block; the destination is not published yet."""
    SESSION_COMMITTING = "session.committing"
    """The orchestrator recorded a session as committing; it has not asked the repository
    to commit it yet."""
    UPGRADE_STARTED = "upgrade.started"
    """``repo upgrade`` holds the exclusive lock; config.json is not rewritten yet."""
    UPGRADE_CONFIG_WRITTEN = "upgrade.config-written"
    """``repo upgrade`` wrote config.json of version 2; its lock is not released yet."""
    LOCK_BUSY = "lock.busy"
    """A lock could not be taken because a conflicting one is held; it will retry."""


class _Armed:
    """What this process does at its points: which kill it, and where hits are logged."""

    def __init__(self) -> None:
        self.kill_at: dict[Point, int] = {}
        self.log: Path | None = None
        self.hits: Counter[Point] = Counter()
        self.guard = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.kill_at) or self.log is not None


_armed = _Armed()


def parse(specs: Iterable[str]) -> dict[Point, int]:
    """``["pack.published@2", "commit.done"]`` → {point: the hit that kills}.

    Raises:
        ValueError: an unknown point or a hit number below 1.
    """
    kill_at: dict[Point, int] = {}
    for spec in specs:
        name, _, hit = spec.partition("@")
        try:
            point = Point(name)
        except ValueError:
            known = ", ".join(p.value for p in Point)
            raise ValueError(f"unknown failpoint {name!r}; the failpoints are: {known}") from None
        count = int(hit) if hit else 1
        if count < 1:
            raise ValueError(f"failpoint {spec!r}: the hit that kills counts from 1")
        kill_at[point] = count
    return kill_at


def arm(specs: Iterable[str], log: Path | None) -> None:
    """Arm this process (its settings ``failpoints`` and ``failpoint_log``)."""
    _armed.kill_at = parse(specs)
    _armed.log = log
    _armed.hits.clear()


def reached(point: Point) -> None:
    """Log the hit if a hit log is set; SIGKILL the process if this hit is armed."""
    if not _armed.active:
        return
    with _armed.guard:
        _armed.hits[point] += 1
        hit = _armed.hits[point]
        fatal = _armed.kill_at.get(point) == hit
        if _armed.log is not None:
            line = f"{point.value} {os.getpid()} {hit}{' kill' if fatal else ''}\n"
            fd = os.open(_armed.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
                if fatal:
                    os.fsync(fd)
            finally:
                os.close(fd)
        if fatal:
            os.kill(os.getpid(), signal.SIGKILL)
