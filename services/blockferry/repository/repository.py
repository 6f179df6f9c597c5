"""The repository facade: one directory holding packs, indexes and restore points.

Only the target side writes a repository (chunk intake, fixed indexes,
commits); restore, verify and check only read it. Several processes may write
different shards at once: every file is published by rename, packs get random
ids, and index files are per pack, so writers never touch the same file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockferry.core.blocks import DEFAULT_BLOCK_SIZE, decompress, digest
from blockferry.core.errors import CorruptionError, LockBusy, RepositoryError, RepositoryNotFound
from blockferry.failpoints import Point
from blockferry.repository.config import RepositoryConfig
from blockferry.repository.files import (
    SECRET_MODE,
    fsync_dir,
    is_temporary,
    list_dir,
    make_dirs,
    read_file,
    remove_file,
    remove_quietly,
    remove_tree_quietly,
    storage_error,
    write_atomic,
)
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.hooks import Hooks
from blockferry.repository.ids import is_pack_id, new_pack_id
from blockferry.repository.layout import (
    COMMIT_TEMP_PREFIX,
    PACK_SUFFIX,
    PACK_TEMP_SUFFIX,
    SUBDIRECTORIES,
    Layout,
)
from blockferry.repository.locks import HeldLock, RepositoryLocks
from blockferry.repository.pack import (
    PackEntry,
    PackWriter,
    SealedPack,
    read_chunk,
    read_footer,
    remove_if_abandoned,
    scan_chunks,
)
from blockferry.repository.pack_files import PackFiles
from blockferry.repository.pack_index import (
    PackIndex,
    encode_index_file,
    list_index_files,
    list_quarantined,
)
from blockferry.repository.restore_point import RestorePoint
from blockferry.repository.restore_points import RestorePointStore
from blockferry.repository.retention import Policy, kept

log = logging.getLogger(__name__)

REPAIR_HINT = (
    "Run `blockferry repo check PATH` to see what is damaged, then repair the file or set "
    "its restore point or staged session aside with `blockferry repo set-aside PATH ID`"
)
"""What an operator can do when GC or prune stop at metadata they cannot read."""

PRUNE_LOCK_WAIT_S = 60.0
"""How long a prune waits for backups' short shared locks (an end marker's) to go."""


@dataclass(frozen=True)
class PruneResult:
    kept: dict[str, list[str]]
    """Restore point id -> why it is kept."""
    removed: list[str]


# Entries an empty-looking directory may hold and still receive a new repository:
# the skeleton of an init that crashed before config.json, and a file system's own.
_INIT_TOLERATED = frozenset(SUBDIRECTORIES) | {"lost+found"}


class Repository:
    """A blockferry repository (format v1) at ``path``; create with :meth:`init`, :meth:`open`."""

    def __init__(self, path: Path, config: RepositoryConfig) -> None:
        self.path = path
        self.config = config
        self.layout = Layout(path)
        self.hooks = Hooks()
        self.locks = RepositoryLocks(self.layout.locks, hooks=self.hooks)
        self._index = PackIndex(
            self.layout.index, self.layout.index_snapshot, self.layout.quarantine, self.pack_entries
        )
        self._pack_files = PackFiles(self.layout)
        self.restore_point_store = RestorePointStore(self.layout, config.block_size, self.hooks)

    def __repr__(self) -> str:
        return f"Repository({str(self.path)!r}, id={self.config.id})"

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def init(
        cls, path: Path, *, block_size: int = DEFAULT_BLOCK_SIZE, shard_count: int = 8
    ) -> Repository:
        """Create a repository in a new or empty directory.

        Raises:
            ConfigError: invalid block size or shard count.
            RepositoryError: ``path`` exists and is not an empty directory.
        """
        path = Path(path)
        config = RepositoryConfig.new(block_size=block_size, shard_count=shard_count)
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise RepositoryError(f"creating repository at {path}: not a directory")
            if (path / "config.json").exists():
                raise RepositoryError(
                    f"creating repository at {path}: a repository already exists there"
                )
            try:
                empty = _is_empty_skeleton(path)
            except OSError as exc:
                raise storage_error(f"creating repository at {path}", exc) from exc
            if not empty:
                raise RepositoryError(f"creating repository at {path}: directory is not empty")
        layout = Layout(path)
        make_dirs(path)
        for name in SUBDIRECTORIES:
            make_dirs(path / name)
        write_atomic(layout.config, config.to_json(), mode=SECRET_MODE)
        log.info("created repository %s at %s", config.id, path)
        return cls(path, config)

    @classmethod
    def open(cls, path: Path) -> Repository:
        """Open an existing repository.

        Raises:
            RepositoryNotFound: no config.json at ``path``.
            CorruptionError, RepositoryError: config.json is damaged or unsupported.
        """
        path = Path(path)
        layout = Layout(path)
        if not path.is_dir() or not layout.config.is_file():
            raise RepositoryNotFound(
                f"no blockferry repository at {path}: run `blockferry repo init {path}` "
                "to create one"
            )
        config = RepositoryConfig.from_json(read_file(layout.config), str(layout.config))
        _keep_private(layout.config)
        return cls(path, config)

    def close(self) -> None:
        """Close cached pack file handles; the object stays usable."""
        self._pack_files.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- packs (target side) --------------------------------------------------------------

    def open_pack(self) -> PackWriter:
        """Start a new pack; the caller adds chunks, then seals or aborts it.

        Sealing writes ``index/<pack-id>.idx`` and adds the entries to this
        object's index, so :meth:`locate` finds them at once.
        """
        pack_id = new_pack_id()
        make_dirs(self.layout.pack_dir(pack_id))
        make_dirs(self.layout.index)
        return PackWriter(
            pack_id=pack_id,
            path=self.layout.pack(pack_id),
            temp_path=self.layout.pack_temp(pack_id),
            max_plain_size=self.config.block_size,
            publish=self._publish,
        )

    def _publish(self, sealed: SealedPack) -> None:
        write_atomic(
            self.layout.index_file(sealed.pack_id),
            encode_index_file(sealed.pack_id, sealed.entries),
        )
        self._index.add(sealed)

    def remove_unsealed(self) -> int:
        """Delete temporary pack files left by crashed writers; returns how many.

        A temporary pack held open by a live writer (in any process) is locked
        with ``flock`` and left alone. Sealed packs are never touched.
        """
        removed = 0
        for directory in self._pack_dirs():
            removed_here = 0
            for name in list_dir(directory):
                if not (is_temporary(name) and name.endswith(PACK_TEMP_SUFFIX)):
                    continue
                if remove_if_abandoned(directory / name):
                    log.info("removed unsealed pack %s", directory / name)
                    removed_here += 1
            if removed_here:
                fsync_dir(directory)
            removed += removed_here
        return removed

    def sealed_pack_ids(self) -> list[str]:
        """Ids of every sealed pack, sorted."""
        ids = []
        for directory in self._pack_dirs():
            for name in list_dir(directory):
                if is_temporary(name) or not name.endswith(PACK_SUFFIX):
                    continue
                pack_id = name[: -len(PACK_SUFFIX)]
                if is_pack_id(pack_id) and pack_id.startswith(directory.name):
                    ids.append(pack_id)
        return sorted(ids)

    def pack_path(self, pack_id: str) -> Path:
        """Where a sealed pack lives."""
        return self.layout.pack(pack_id)

    def pack_entries(self, pack_id: str) -> list[PackEntry]:
        """A sealed pack's entries, from its footer; raises CorruptionError if damaged."""
        if not is_pack_id(pack_id):
            raise RepositoryError(f"invalid pack id {pack_id!r}")
        return read_footer(self.layout.pack(pack_id), pack_id)

    def remove_packs(self, pack_ids: Sequence[str], held: HeldLock) -> None:
        """Delete sealed packs (garbage collection only, under the exclusive lock
        ``held``, checked before each deletion): each index file first, so no chunk is
        located in a pack that is going, then the pack."""
        if not pack_ids:
            return
        for pack_id in pack_ids:
            held.check()
            remove_file(self.layout.index_file(pack_id))
        fsync_dir(self.layout.index)
        self._index.refresh()
        for pack_id in pack_ids:
            held.check()
            remove_file(self.layout.pack(pack_id))
        for quarantined_pack, chunk in list_quarantined(self.layout.quarantine):
            if quarantined_pack in pack_ids:  # the damaged copy went with its pack
                remove_file(self.layout.quarantined(quarantined_pack, chunk))
        for directory in {self.layout.pack_dir(pack_id) for pack_id in pack_ids}:
            fsync_dir(directory)

    def _pack_dirs(self) -> list[Path]:
        return [
            self.layout.packs / name
            for name in sorted(list_dir(self.layout.packs))
            if not is_temporary(name) and len(name) == 2
        ]

    # -- pack index -----------------------------------------------------------------------

    def quarantine(self, entry: PackEntry, reason: str) -> None:
        """Never locate this damaged copy of a chunk again (``quarantine/``): the digest
        is then found in another copy, or is missing, so the next backup that has the
        block sends it again and its good copy heals every restore point naming it.
        The copy stays in its pack until GC, which counts it as dead."""
        make_dirs(self.layout.quarantine)
        write_atomic(self.layout.quarantined(entry.pack_id, entry.digest), reason.encode())
        log.error("quarantined chunk %s in pack %s: %s", entry.digest.hex(), entry.pack_id, reason)
        self._index.refresh()

    def is_quarantined(self, entry: PackEntry) -> bool:
        """Whether this copy of a chunk was found damaged."""
        return self.layout.quarantined(entry.pack_id, entry.digest).exists()

    def refresh_index(self) -> None:
        """Pick up pack index files written by other processes since the last load."""
        self._index.refresh()

    def locate(self, digest: bytes) -> PackEntry | None:
        """Where the chunk ``digest`` is stored, or None. Loads the index on first use."""
        return self._index.locate(digest)

    def indexed_entries(self, pack_id: str) -> list[PackEntry]:
        """The chunks of a pack as the pack index has them (from its index file, else its
        footer, else a scan), for a pack whose footer cannot be read."""
        return self._index.entries_of(pack_id)

    def indexed_chunk_count(self) -> int:
        """Chunks in the in-memory index."""
        return len(self._index)

    def read_stored(self, entry: PackEntry) -> bytes:
        """A chunk's stored bytes, checksum verified; CorruptionError names pack and digest."""
        with self._pack_files.borrow(entry.pack_id) as fd:
            return read_chunk(fd, entry, self.layout.relative(self.layout.pack(entry.pack_id)))

    def read_entry(self, entry: PackEntry) -> bytes:
        """A chunk's plaintext, checksum, size and keyed digest verified.

        Raises:
            CorruptionError: naming the chunk's digest and pack.
        """
        stored = self.read_stored(entry)
        pack = self.layout.relative(self.layout.pack(entry.pack_id))
        subject = f"chunk {entry.digest.hex()} in pack {entry.pack_id} ({pack})"
        try:
            plain = decompress(stored, entry.plain_size) if entry.compressed else stored
        except CorruptionError as exc:
            raise CorruptionError(f"reading {subject}: {exc}") from exc
        if len(plain) != entry.plain_size:
            raise CorruptionError(
                f"reading {subject}: {len(plain)} bytes of plaintext, expected {entry.plain_size}"
            )
        if digest(plain, self.config.dedupe_key) != entry.digest:
            raise CorruptionError(f"reading {subject}: plaintext does not match its digest")
        return plain

    def read_block(self, digest: bytes, *, quarantine: bool = False) -> bytes:
        """The plaintext of the chunk ``digest``, verified; refreshes the index once on a miss.

        Args:
            quarantine: a damaged copy is quarantined (see :meth:`quarantine`) before
                the error is raised; off for a repository that must not be written.

        Raises:
            CorruptionError: the chunk is missing or damaged.
        """
        entry = self.locate(digest)
        if entry is None:
            self.refresh_index()
            entry = self.locate(digest)
            if entry is None:
                raise CorruptionError(
                    f"chunk {digest.hex()} is missing from repository {self.path}"
                )
        try:
            return self.read_entry(entry)
        except CorruptionError as exc:
            if not quarantine:
                raise
            self.quarantine(entry, str(exc))
            raise CorruptionError(
                f"{exc}; quarantined: the next backup of this data stores it again"
            ) from exc

    def rebuild_index(self, *, missing_only: bool = False, lock_wait: float = 0.0) -> int:
        """Write ``index/`` again from the packs alone; returns how many packs were indexed.

        Each pack's footer is used; a pack whose footer is damaged is indexed
        from its chunk headers as far as they check out. Index files of packs
        that no longer exist are removed, under the exclusive lock (a GC or a
        backup must not run meanwhile). With ``missing_only`` only packs without
        an index file are indexed (start-up after a crash between sealing a pack
        and writing its index file), under a shared lock: beside backups, never
        beside a GC that is deleting packs.

        Raises:
            LockBusy: the lock was not free within ``lock_wait`` seconds.
        """
        if missing_only:
            lock = self.shared_lock("rebuild missing index files", wait=lock_wait)
        else:
            lock = self.exclusive_lock("rebuild-index", wait=lock_wait)
        with lock:
            return self._rebuild_index(missing_only)

    def _rebuild_index(self, missing_only: bool) -> int:
        make_dirs(self.layout.index)
        if not missing_only:  # it may hold entries the packs no longer give
            remove_file(self.layout.index_snapshot)
            fsync_dir(self.layout.index)
        # Index files are listed before packs: a pack sealed meanwhile then has both.
        existing = list_index_files(self.layout.index)
        pack_ids = self.sealed_pack_ids()
        indexed = 0
        for pack_id in pack_ids:
            if missing_only and pack_id in existing:
                continue
            path = self.layout.pack(pack_id)
            try:
                entries = read_footer(path, pack_id)
            except CorruptionError as exc:
                try:
                    entries, reason = scan_chunks(path, pack_id)
                except CorruptionError as header_exc:
                    log.error("cannot index pack %s: %s", pack_id, header_exc)
                    continue
                log.warning("%s; indexed %d chunks by scanning (%s)", exc, len(entries), reason)
            write_atomic(
                self.layout.index_file(pack_id), encode_index_file(pack_id, entries), sync_dir=False
            )
            indexed += 1
        if not missing_only:
            for pack_id in existing - set(pack_ids):
                log.info("removing index file of missing pack %s", pack_id)
                remove_quietly(self.layout.index_file(pack_id))
        fsync_dir(self.layout.index)
        self._index.reload()
        return indexed

    # -- fixed indexes and restore points -------------------------------------------------

    def stage_fixed_index(
        self, session_id: str, disk: str, disk_size: int, digests: Sequence[bytes]
    ) -> None:
        """Write a disk's fixed index for a session; see :class:`RestorePointStore`."""
        self.restore_point_store.stage_fixed_index(session_id, disk, disk_size, digests)

    def staged_fixed_indexes(self) -> list[FixedIndex]:
        """Every staged fixed index (sessions between an end marker and their commit)."""
        return self.restore_point_store.staged_fixed_indexes()

    def is_staged(self, session_id: str, disk: str) -> bool:
        """Whether the disk's fixed index for the session is staged (written, not committed)."""
        return self.layout.staged_fixed_index(session_id, disk).is_file()

    def committed_as(self, job: str, session_id: str) -> RestorePoint | None:
        """The restore point session ``session_id`` of ``job`` was committed as, if it
        was (its staging, if any is left, is removed)."""
        return self.restore_point_store.committed(job, session_id)

    def discard_committed_staging(self) -> int:
        """Remove the staging left of sessions committed already (exclusive lock only)."""
        return self.restore_point_store.discard_committed_staging()

    def discard_staging(self, session_id: str) -> None:
        """Forget what a session that ended without a restore point staged; its chunks
        go at the next GC."""
        self.restore_point_store.discard_staging(session_id)

    def commit_restore_point(
        self,
        *,
        job: str,
        session_id: str,
        disks: Sequence[str],
        parent: str | None,
        stats: dict[str, Any],
        restore_point_id: str | None = None,
        lock_wait: float = 0.0,
    ) -> RestorePoint:
        """Commit a session's staged fixed indexes as a restore point, atomically.

        Under a shared lock, so a commit and a garbage collection never overlap (GC
        could otherwise miss the restore point in both of the places it looks).
        Idempotent per session. See :meth:`RestorePointStore.commit`.

        Raises:
            LockBusy: a GC or prune held the repository for longer than ``lock_wait``.
        """
        with self.shared_lock(f"commit {session_id}", wait=lock_wait):
            return self.restore_point_store.commit(
                job=job,
                session_id=session_id,
                disks=disks,
                parent=parent,
                stats=stats,
                restore_point_id=restore_point_id,
            )

    def jobs(self) -> list[str]:
        """Jobs with restore points, sorted."""
        return self.restore_point_store.jobs()

    def restore_points(self, job: str | None = None, *, strict: bool = False) -> list[RestorePoint]:
        """Committed restore points, oldest first; damaged ones are logged and skipped,
        or with ``strict`` raise CorruptionError."""
        return self.restore_point_store.restore_points(job, strict=strict)

    def prune(self, job: str, policy: Policy, *, dry_run: bool = False) -> PruneResult:
        """Remove the restore points of ``job`` that ``policy`` does not keep, under the
        exclusive lock (a commit in progress finishes first).

        Raises:
            CorruptionError: a restore point of the job cannot be read; nothing was
                removed (it might be the newest, which retention always keeps).
        """
        with self.exclusive_lock(f"prune {job}", wait=PRUNE_LOCK_WAIT_S) as held:
            try:
                points = self.restore_point_store.restore_points(job, strict=True)
            except CorruptionError as exc:
                raise CorruptionError(
                    f"prune of job {job} stopped, nothing was removed: {exc}. {REPAIR_HINT}"
                ) from exc
            keep = kept(points, policy)
            gone = [point for point in points if point.id not in keep]
            self.hooks.reached(Point.PRUNE_DECIDED)
            if not dry_run:
                for point in gone:
                    held.check()
                    self.restore_point_store.remove(point)
                    self.hooks.reached(Point.PRUNE_REMOVED_ONE)
        return PruneResult(kept=keep, removed=[point.id for point in gone])

    def restore_point_ids(self, job: str | None = None) -> list[tuple[str, str]]:
        """(job, id) of every committed restore point, without reading them."""
        return self.restore_point_store.restore_point_ids(job)

    def restore_point(self, rp_id: str) -> RestorePoint:
        """The committed restore point ``rp_id``; raises RestorePointNotFound."""
        return self.restore_point_store.restore_point(rp_id)

    def latest_restore_point(self, job: str, disk: str) -> RestorePoint | None:
        """The newest restore point of ``job`` that has ``disk``, or None."""
        return self.restore_point_store.latest_restore_point(job, disk)

    def load_restore_point(self, job: str, rp_id: str) -> RestorePoint:
        """Read one restorepoint.json; raises CorruptionError if damaged (for verify, check)."""
        return self.restore_point_store.load_restore_point(job, rp_id)

    def fixed_index_path(self, point: RestorePoint, disk: str) -> Path:
        """Where a restore point's fixed index of ``disk`` lives."""
        return self.restore_point_store.fixed_index_path(point, disk)

    def read_fixed_index(self, point: RestorePoint, disk: str) -> FixedIndex:
        """A disk's fixed index in a restore point, checked against restorepoint.json."""
        return self.restore_point_store.read_fixed_index(point, disk)

    # -- locks ----------------------------------------------------------------------------

    def shared_lock(
        self, purpose: str = "", *, wait: float = 0.0
    ) -> contextlib.AbstractContextManager[HeldLock]:
        """Hold a shared lock (backup, restore, verify) for a ``with`` block."""
        make_dirs(self.layout.locks)
        return self.locks.shared(purpose, wait=wait)

    def exclusive_lock(
        self, purpose: str = "", *, wait: float = 0.0
    ) -> contextlib.AbstractContextManager[HeldLock]:
        """Hold an exclusive lock (prune, GC) for a ``with`` block."""
        make_dirs(self.layout.locks)
        return self.locks.exclusive(purpose, wait=wait)

    # -- housekeeping ---------------------------------------------------------------------

    def temporary_files(self) -> list[Path]:
        """Temporary files and directories left anywhere in the repository."""
        found: list[Path] = []
        for directory in (self.path, self.layout.index, self.layout.locks, self.layout.staging):
            found += [directory / n for n in list_dir(directory) if is_temporary(n)]
        for session in list_dir(self.layout.staging):
            if not is_temporary(session):
                session_dir = self.layout.staging_dir(session)
                found += [session_dir / n for n in list_dir(session_dir) if is_temporary(n)]
        for job in self.jobs():
            job_dir = self.layout.job_dir(job)
            found += [job_dir / n for n in list_dir(job_dir) if is_temporary(n)]
        for directory in self._pack_dirs():
            found += [directory / n for n in list_dir(directory) if is_temporary(n)]
        return sorted(found)

    def remove_interrupted_commits(self) -> int:
        """Remove the temporary restore point directories and staged fixed indexes that
        crashed commits and disk ends left; returns how many. Both are written only under
        a shared lock, so while this holds the exclusive lock no writer of them is at
        work anywhere. If the lock is busy nothing is removed: GC reaps them later."""
        try:
            with self.exclusive_lock("removing what crashed commits left"):
                interrupted = [
                    path
                    for path in self.temporary_files()
                    if path.name.startswith(COMMIT_TEMP_PREFIX)
                    or path.parent.parent == self.layout.staging
                ]
                for path in interrupted:
                    log.info("removing %s, left by a crashed commit", self.layout.relative(path))
                    if path.is_dir():
                        remove_tree_quietly(path)
                    else:
                        remove_quietly(path)
                return len(interrupted)
        except LockBusy:
            return 0

    def remove_stale_temporaries(self, min_age: float = 3600.0) -> int:
        """Remove temporary files and commit directories older than ``min_age`` seconds.

        Temporary packs are left to :meth:`remove_unsealed`, which knows
        whether their writer is alive. Returns how many entries were removed.
        """
        removed = 0
        cutoff = time.time() - min_age
        for path in self.temporary_files():
            # Only names blockferry gives its temporaries; other dot-files are not ours.
            if path.name.endswith(PACK_TEMP_SUFFIX) or ".tmp" not in path.name:
                continue
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and path.name.startswith(COMMIT_TEMP_PREFIX):
                    remove_tree_quietly(path)
                else:
                    path.unlink()
            except OSError as exc:
                log.warning("removing temporary %s: %s", path, exc)
                continue
            removed += 1
        return removed


def _is_empty_skeleton(path: Path) -> bool:
    """Whether ``path`` is empty but for empty skeleton directories (a crashed init)."""
    for name in os.listdir(path):
        child = path / name
        if name.startswith(".config.json.tmp"):
            continue
        if name not in _INIT_TOLERATED or not child.is_dir() or os.listdir(child):
            return False
    return True


def _keep_private(path: Path) -> None:
    """config.json holds the dedupe key: readable by its owner only. One an older release
    made readable by all is made private (or, where this process may not, named)."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, SECRET_MODE)
            log.warning("%s was readable by others (mode %o): made owner-only", path, mode)
    except OSError as exc:
        log.warning("%s is readable by others and stays so: %s", path, exc.strerror)
