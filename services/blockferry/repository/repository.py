"""The repository facade: packs, indexes and restore points on one storage.

Only the target side writes a repository (chunk intake, fixed indexes,
commits); restore, verify and check only read it. Several processes may write
different shards at once: every object is published whole, packs get random
ids, and index files are per pack, so writers never touch the same object.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from blockferry.core.blocks import DEFAULT_BLOCK_SIZE, decompress, digest
from blockferry.core.errors import (
    ConfigError,
    CorruptionError,
    LockBusy,
    RepositoryError,
    RepositoryNotFound,
    WrongKey,
)
from blockferry.failpoints import Point
from blockferry.repository import generations, layout
from blockferry.repository.config import CONFIG_VERSION, RepositoryConfig
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.hooks import Hooks
from blockferry.repository.ids import is_pack_id, new_pack_id
from blockferry.repository.keys import (
    KEYS,
    RECOVERY_KEY,
    Argon2Params,
    Keyring,
    KeySlot,
    Secret,
    new_master_key,
    recovery_key,
)
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.locks import HeldLock, LockKind, RepositoryLocks
from blockferry.repository.pack import (
    PackEntry,
    PackFooter,
    PackWriter,
    SealedPack,
    read_chunk,
    read_footer,
    scan_chunks,
)
from blockferry.repository.pack_index import (
    PackIndex,
    encode_index_file,
    list_index_files,
    list_quarantined,
)
from blockferry.repository.restore_point import RestorePoint
from blockferry.repository.restore_points import RestorePointStore
from blockferry.repository.retention import Policy, kept
from blockferry.repository.sealing import Sealer, derive_data_key
from blockferry.repository.storage import ObjectExists, ObjectInfo, ObjectNotFound, Storage
from blockferry.repository.storage_views import SealedStorage

log = logging.getLogger(__name__)

REPAIR_HINT = (
    "Run `blockferry repo check PATH` to see what is damaged, then repair the file or set "
    "its restore point or staged session aside with `blockferry repo set-aside PATH ID`"
)
"""What an operator can do when GC or prune stop at metadata they cannot read."""

PRUNE_LOCK_WAIT_S = 60.0
"""How long a prune waits for backups' short shared locks (an end marker's) to go."""
PIN_WAIT_S = 120.0
"""How long pinning a restore point waits for a prune under way to finish."""
PRUNE = "prune"
"""The purpose of a prune's lock (its job follows), which a pin waits for."""


@dataclass(frozen=True)
class PruneResult:
    kept: dict[str, list[str]]
    """Restore point id -> why it is kept."""
    removed: list[str]


class Repository:
    """A blockferry repository on ``storage``; create with :meth:`init`, :meth:`open`."""

    def __init__(
        self, storage: Storage, config: RepositoryConfig, master_key: bytes | None = None
    ) -> None:
        """Use :meth:`init` or :meth:`open`; ``master_key`` is an encrypted repository's,
        unlocked."""
        self._master_key = master_key
        self._sealer = (
            None if master_key is None else Sealer(derive_data_key(master_key, config.id))
        )
        self.keyring = Keyring(storage, config.id)
        self.stored = storage
        """The objects as stored: sealed ones are not opened (to move them as they are)."""
        if self._sealer is not None:
            storage = SealedStorage(storage, self._sealer)
        self.storage = storage
        self.config = config
        self.hooks = Hooks()
        self.locks = RepositoryLocks(storage, hooks=self.hooks)
        self._index = PackIndex(storage, self.pack_entries)
        self.restore_point_store = RestorePointStore(storage, config.block_size, self.hooks)

    def __repr__(self) -> str:
        return f"Repository({self.where!r}, id={self.config.id})"

    @property
    def where(self) -> str:
        """The repository as an operator finds it (a path, a URL), for messages."""
        return self.storage.where()

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        place: Path | Storage,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        shard_count: int = 8,
        secret: Secret | None = None,
        argon2: Argon2Params | None = None,
        dedupe_key: bytes | None = None,
    ) -> Repository:
        """Create a repository on an empty storage (a path is a local directory),
        encrypted at rest with a new master key that ``secret`` unlocks, or without
        encryption if ``secret`` is None; with ``dedupe_key``, another repository's
        (a copy destination's: its chunks keep their digests), else a new one.

        Raises:
            ConfigError: invalid block size or shard count.
            RepositoryError: a repository, or anything else, is there already.
        """
        storage = _storage(place)
        config = RepositoryConfig.new(
            block_size=block_size, shard_count=shard_count, dedupe_key=dedupe_key
        )
        leftovers = storage.list_objects("")
        if any(not info.name.startswith(KEYS) for info in leftovers):
            try:
                storage.stat(layout.CONFIG_FILE)
                why = "a repository already exists there"
            except ObjectNotFound:
                why = "it is not empty"
            raise RepositoryError(f"creating repository at {storage.where()}: {why}")
        storage.delete(*(info.name for info in leftovers))  # key slots of a killed init
        master_key = None
        if secret is not None:
            master_key = new_master_key()
            config = config.sealed(Sealer(derive_data_key(master_key, config.id)))
            Keyring(storage, config.id).add(master_key, secret, label="initial", argon2=argon2)
        try:
            storage.put_new(layout.CONFIG_FILE, config.to_json())
        except ObjectExists as exc:
            raise RepositoryError(
                f"creating repository at {storage.where()}: a repository already exists there"
            ) from exc
        log.info(
            "created repository %s at %s (%s)",
            config.id,
            storage.where(),
            "encrypted" if config.encrypted else "not encrypted",
        )
        return cls(storage, config, master_key)

    @classmethod
    def open(cls, place: Path | Storage, *, secret: Secret | None = None) -> Repository:
        """Open an existing repository (a path is a local directory); an encrypted one
        with the passphrase, key file or recovery key in ``secret``.

        Raises:
            RepositoryNotFound: no config.json there.
            WrongKey: the repository is encrypted and ``secret`` does not open it.
            CorruptionError, RepositoryError: config.json is damaged or unsupported.
        """
        storage = _storage(place)
        try:
            data = storage.get(layout.CONFIG_FILE)
        except ObjectNotFound as exc:
            raise RepositoryNotFound(
                f"no blockferry repository at {storage.where()}: run `blockferry repo init "
                f"{storage.where()}` to create one"
            ) from exc
        source = storage.where(layout.CONFIG_FILE)
        config = RepositoryConfig.from_json(data, source)
        if not config.encrypted:
            return cls(storage, config)
        if secret is None:
            raise WrongKey(
                f"repository {storage.where()} is encrypted: give its key file or passphrase"
            )
        if secret.kind == RECOVERY_KEY:
            master_key = secret.material
        else:
            master_key, _ = Keyring(storage, config.id).unlock(secret)
        sealer = Sealer(derive_data_key(master_key, config.id))
        try:
            config = config.unsealed(sealer, source)
        except CorruptionError as exc:
            if secret.kind == RECOVERY_KEY:
                raise WrongKey(
                    f"opening repository {storage.where()}: the recovery key is not its"
                ) from exc
            raise
        return cls(storage, config, master_key)

    # -- keys -----------------------------------------------------------------------------

    def add_key(
        self, secret: Secret, *, label: str = "", argon2: Argon2Params | None = None
    ) -> KeySlot:
        """Let ``secret`` open this encrypted repository too."""
        return self.keyring.add(self._unlocked(), secret, label=label, argon2=argon2)

    def recovery_key(self) -> str:
        """The master key as a printable recovery key."""
        return recovery_key(self._unlocked())

    def _unlocked(self) -> bytes:
        if self._master_key is None:
            raise ConfigError(f"repository {self.where} is not encrypted: it has no keys")
        return self._master_key

    def close(self) -> None:
        """Close cached storage handles; the object stays usable."""
        self.storage.close()

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
        return PackWriter(
            pack_id=pack_id,
            writer=self.storage.writer(layout.pack(pack_id)),
            max_plain_size=self.config.block_size,
            publish=self._publish,
            unpublish=lambda gone: self.storage.delete(layout.pack(gone)),
            generation=self.generation,
            sealer=self._sealer,
        )

    def _publish(self, sealed: SealedPack) -> None:
        self.storage.put(
            layout.index_file(sealed.pack_id), encode_index_file(sealed.pack_id, sealed.entries)
        )
        self._index.add(sealed)

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        """Delete what killed writers left (a pack never sealed, an object half put);
        returns how many. A live writer's (in any process) is left alone, and so is
        everything published."""
        return self.storage.remove_leftovers(min_age)

    def sealed_packs(self) -> dict[str, ObjectInfo]:
        """Every sealed pack, by id."""
        packs = {}
        for info in self.storage.list_objects(layout.PACKS):
            parts = layout.parts(info.name, layout.PACKS)
            if len(parts) != 2 or not parts[1].endswith(layout.PACK_SUFFIX):
                continue
            pack_id = parts[1][: -len(layout.PACK_SUFFIX)]
            if is_pack_id(pack_id) and pack_id.startswith(parts[0]):
                packs[pack_id] = info
        return packs

    def sealed_pack_ids(self) -> list[str]:
        """Ids of every sealed pack, sorted."""
        return sorted(self.sealed_packs())

    def pack_entries(self, pack_id: str) -> list[PackEntry]:
        """A sealed pack's entries, from its footer; raises CorruptionError if damaged."""
        return self.pack_footer(pack_id).entries

    def pack_footer(self, pack_id: str) -> PackFooter:
        """A sealed pack's footer; raises CorruptionError if damaged."""
        if not is_pack_id(pack_id):
            raise RepositoryError(f"invalid pack id {pack_id!r}")
        return read_footer(self.storage, pack_id)

    def generation(self) -> int:
        """The repository's generation now (:mod:`generations`)."""
        return generations.current(self.storage)

    def start_generation(self) -> int:
        """Begin the next generation (a GC, a backup) and return it."""
        return generations.start(self.storage)

    def remove_packs(self, pack_ids: Sequence[str], held: HeldLock) -> None:
        """Delete sealed packs (garbage collection only, under the exclusive lock
        ``held``, checked before each deletion): each index file first, so no chunk is
        located in a pack that is going, then the pack."""
        if not pack_ids:
            return
        for pack_id in pack_ids:
            held.check()
            self.storage.delete(layout.index_file(pack_id))
        self._index.refresh()
        for pack_id in pack_ids:
            held.check()
            self.storage.delete(layout.pack(pack_id))
        going = set(pack_ids)
        self.storage.delete(  # a damaged copy went with its pack
            *(
                layout.quarantined(pack_id, chunk)
                for pack_id, chunk in sorted(list_quarantined(self.storage))
                if pack_id in going
            )
        )

    # -- pack index -----------------------------------------------------------------------

    def quarantine(self, entry: PackEntry, reason: str) -> None:
        """Never locate this damaged copy of a chunk again (``quarantine/``): the digest
        is then found in another copy, or is missing, so the next backup that has the
        block sends it again and its good copy heals every restore point naming it.
        The copy stays in its pack until GC, which counts it as dead."""
        self.storage.put(layout.quarantined(entry.pack_id, entry.digest), reason.encode())
        log.error("quarantined chunk %s in pack %s: %s", entry.digest.hex(), entry.pack_id, reason)
        self._index.refresh()

    def refresh_index(self) -> None:
        """Pick up pack index files written by other processes since the last load."""
        self._index.refresh()

    def locate(self, digest: bytes) -> PackEntry | None:
        """Where the chunk ``digest`` is stored, or None. Loads the index on first use."""
        return self._index.locate(digest)

    def located_entries(self) -> Iterator[PackEntry]:
        """Every chunk the pack index locates (a scan of the loaded map; chunks indexed
        meanwhile may or may not be among them). Loads the index on first use."""
        return self._index.entries()

    def indexed_chunk_count(self) -> int:
        """Chunks in the in-memory index."""
        return len(self._index)

    def read_stored(self, entry: PackEntry) -> bytes:
        """A chunk's stored bytes (sealed, in an encrypted repository), checksum verified;
        CorruptionError names pack and digest."""
        return read_chunk(self.storage, entry)

    def read_payload(self, entry: PackEntry) -> bytes:
        """A chunk's payload (a zstd frame if it is compressed, else the plaintext),
        checksum verified and, in an encrypted repository, opened: authenticated as the
        chunk of its digest. CorruptionError names pack and digest."""
        stored = self.read_stored(entry)
        if not entry.encrypted:
            return stored
        if self._sealer is None:
            raise CorruptionError(
                f"reading chunk {entry.digest.hex()} in {layout.pack(entry.pack_id)}: it is "
                "encrypted, but the repository is not"
            )
        return self._sealer.open(
            stored, entry.digest, f"chunk {entry.digest.hex()} in {layout.pack(entry.pack_id)}"
        )

    def read_entry(self, entry: PackEntry) -> bytes:
        """A chunk's plaintext, checksum, size and keyed digest verified.

        Raises:
            CorruptionError: naming the chunk's digest and pack.
        """
        stored = self.read_payload(entry)
        subject = f"chunk {entry.digest.hex()} in {layout.pack(entry.pack_id)}"
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

        A chunk that garbage collection moved to a new pack since the index was loaded
        (a reader that holds no lock, such as an export) is read again from its new place.

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
                    f"chunk {digest.hex()} is missing from repository {self.where}"
                )
        try:
            return self.read_entry(entry)
        except CorruptionError as exc:
            self.refresh_index()
            moved = self.locate(digest)
            if moved is not None and moved != entry:
                return self.read_block(digest, quarantine=quarantine)
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
        if not missing_only:  # it may hold entries the packs no longer give
            self.storage.delete(layout.INDEX_SNAPSHOT)
        # Index files are listed before packs: a pack sealed meanwhile then has both.
        existing = list_index_files(self.storage)
        pack_ids = self.sealed_pack_ids()
        indexed = 0
        for pack_id in pack_ids:
            if missing_only and pack_id in existing:
                continue
            try:
                entries = read_footer(self.storage, pack_id).entries
            except CorruptionError as exc:
                try:
                    entries, reason = scan_chunks(self.storage, pack_id)
                except CorruptionError as header_exc:
                    log.error("cannot index pack %s: %s", pack_id, header_exc)
                    continue
                log.warning("%s; indexed %d chunks by scanning (%s)", exc, len(entries), reason)
            self.storage.put(layout.index_file(pack_id), encode_index_file(pack_id, entries))
            indexed += 1
        if not missing_only:
            for pack_id in sorted(existing.keys() - set(pack_ids)):
                log.info("removing index file of missing pack %s", pack_id)
                self.storage.delete(layout.index_file(pack_id))
            self._index.reload()
        elif indexed:  # new index files: the map (or its snapshot) takes them in
            self._index.refresh()
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
        return self.restore_point_store.is_staged(session_id, disk)

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
        created: datetime | None = None,
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
                created=created,
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
        with self.exclusive_lock(f"{PRUNE} {job}", wait=PRUNE_LOCK_WAIT_S) as held:
            try:
                points = self.restore_point_store.restore_points(job, strict=True)
            except CorruptionError as exc:
                raise CorruptionError(
                    f"prune of job {job} stopped, nothing was removed: {exc}. {REPAIR_HINT}"
                ) from exc
            keep = kept(points, policy)
            for rp_id in self.locks.pins() & {point.id for point in points}:
                keep.setdefault(rp_id, []).append("pinned")
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

    def fixed_index_name(self, point: RestorePoint, disk: str) -> str:
        """The object of a restore point's fixed index of ``disk``."""
        return self.restore_point_store.fixed_index_name(point, disk)

    def read_fixed_index(self, point: RestorePoint, disk: str) -> FixedIndex:
        """A disk's fixed index in a restore point, checked against restorepoint.json."""
        return self.restore_point_store.read_fixed_index(point, disk)

    # -- locks ----------------------------------------------------------------------------

    def shared_lock(
        self, purpose: str = "", *, wait: float = 0.0
    ) -> contextlib.AbstractContextManager[HeldLock]:
        """Hold a shared lock (backup, restore, verify) for a ``with`` block."""
        return self.locks.shared(purpose, wait=wait)

    def exclusive_lock(
        self, purpose: str = "", *, wait: float = 0.0
    ) -> contextlib.AbstractContextManager[HeldLock]:
        """Hold an exclusive lock (prune, GC) for a ``with`` block."""
        return self.locks.exclusive(purpose, wait=wait)

    def pin(self, rp_id: str, purpose: str) -> HeldLock:
        """Pin the restore point ``rp_id`` while it is read without a lock (an export):
        prune keeps it, and so GC keeps its chunks, until the pin is released (or its
        holder dies and its heartbeat goes stale). GC, prune of other restore points and
        backups go on meanwhile, and a GC running now does not hold the pin up.

        A prune lists the pins once it holds its lock. So the pin, once written, waits
        for a prune that holds its lock now to finish, then reads the restore point: a
        prune that saw no pin has finished by then (the restore point is gone: this
        raises), and any later one sees the pin.

        Raises:
            RestorePointNotFound: no such restore point.
            LockBusy: a prune held the repository for longer than the wait.
        """
        held = self.locks.acquire(LockKind.PIN, purpose=purpose, restore_point=rp_id)
        try:
            deadline = time.monotonic() + PIN_WAIT_S
            while pruning := self.locks.held_for(PRUNE):
                if time.monotonic() > deadline:
                    raise LockBusy(
                        f"pinning restore point {rp_id}: {pruning[0].describe()} goes on"
                    )
                time.sleep(0.2)
            self.restore_point(rp_id)
        except BaseException:
            held.release()
            raise
        return held

    # -- format -------------------------------------------------------------------------

    def upgrade(self, *, lock_wait: float = 0.0) -> bool:
        """Convert a version 1 repository to version 2 in place; False if it is version
        2 already.

        Version 2 reads every object of version 1 as it is (see FORMAT.md), so the
        conversion is one atomic put of config.json under the exclusive lock: killed
        before it, the repository is version 1; after it, version 2; either way every
        restore point restores, and running it again finishes it. Nothing is encrypted
        by it: a version 1 repository stays unencrypted.
        """
        if self.config.version == CONFIG_VERSION:
            return False
        with self.exclusive_lock("upgrade to format version 2", wait=lock_wait) as held:
            self.hooks.reached(Point.UPGRADE_STARTED)
            current = RepositoryConfig.from_json(
                self.storage.get(layout.CONFIG_FILE), self.storage.where(layout.CONFIG_FILE)
            )
            if current.version != CONFIG_VERSION:
                held.check()
                self.storage.put(
                    layout.CONFIG_FILE, replace(current, version=CONFIG_VERSION).to_json()
                )
                self.hooks.reached(Point.UPGRADE_CONFIG_WRITTEN)
            self.config = replace(self.config, version=CONFIG_VERSION)
        log.info("upgraded repository %s to format version %d", self.where, CONFIG_VERSION)
        return True

    # -- housekeeping ---------------------------------------------------------------------

    def remove_interrupted_commits(self) -> int:
        """Remove the fixed indexes of restore points whose commit marker was never
        written; returns how many restore points' worth. Commits run under a shared
        lock, so while this holds the exclusive lock no commit is at work anywhere. If
        the lock is busy nothing is removed: GC reaps them later."""
        try:
            with self.exclusive_lock("removing what crashed commits left"):
                return self.restore_point_store.remove_unmarked()
        except LockBusy:
            return 0


def _storage(place: Path | Storage) -> Storage:
    return LocalStorage(place) if isinstance(place, str | Path) else place
