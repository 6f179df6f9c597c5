"""Restore points in a repository: staging fixed indexes, committing, listing, reading.

A restore point that is not committed does not exist. The commit writes the restore
point's fixed indexes (``restorepoints/<job>/<id>/<disk>.fidx``) first and its
``restorepoint.json`` last, with a put-if-absent: that object is the commit marker,
and only it makes a restore point. Fixed indexes without a marker (a commit killed
half way) are no restore point; :meth:`RestorePointStore.remove_unmarked` reaps them
under the exclusive lock. Removing a restore point deletes its marker first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from blockferry.core.blocks import checksum
from blockferry.core.errors import (
    BlockferryError,
    ConfigError,
    CorruptionError,
    RepositoryError,
    RestorePointNotFound,
)
from blockferry.failpoints import Point
from blockferry.repository import layout
from blockferry.repository.fixed_index import DigestArray, FixedIndex
from blockferry.repository.hooks import Hooks
from blockferry.repository.ids import (
    is_restore_point_id,
    new_restore_point_id,
    utc_now,
    validate_name,
)
from blockferry.repository.restore_point import RestorePoint, RestorePointDisk
from blockferry.repository.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)


class RestorePointStore:
    """The ``restorepoints/`` and ``staging/`` objects of a repository."""

    def __init__(self, storage: Storage, block_size: int, hooks: Hooks) -> None:
        self.storage = storage
        self.block_size = block_size
        self._hooks = hooks

    def stage_fixed_index(
        self, session_id: str, disk: str, disk_size: int, digests: Sequence[bytes]
    ) -> None:
        """Write a disk's fixed index for a session, to be taken by its commit.

        Raises:
            ConfigError: invalid names, or digests that do not cover ``disk_size``.
        """
        validate_name("session", session_id)
        validate_name("disk", disk)
        try:
            fidx = FixedIndex(self.block_size, disk_size, DigestArray.from_digests(digests))
        except ValueError as exc:
            raise ConfigError(f"staging fixed index of disk {disk}: {exc}") from exc
        self.storage.put(layout.staged_fixed_index(session_id, disk), fidx.encode())

    def staged_names(self) -> list[str]:
        """The names of every staged fixed index, sorted."""
        return sorted(
            info.name
            for info in self.storage.list_objects(layout.STAGING)
            if len(layout.parts(info.name, layout.STAGING)) == 2
            and info.name.endswith(layout.FIXED_INDEX_SUFFIX)
        )

    def staged_sessions(self) -> set[str]:
        """Sessions with staged fixed indexes."""
        return {layout.parts(name, layout.STAGING)[0] for name in self.staged_names()}

    def staged_fixed_indexes(self) -> list[FixedIndex]:
        """Every staged fixed index; a damaged one raises CorruptionError."""
        found = []
        for name in self.staged_names():
            try:
                found.append(FixedIndex.decode(self.storage.get(name), name))
            except ObjectNotFound:
                continue  # committed and discarded meanwhile
        return found

    def is_staged(self, session_id: str, disk: str) -> bool:
        """Whether the disk's fixed index for the session is staged."""
        try:
            self.storage.stat(layout.staged_fixed_index(session_id, disk))
        except ObjectNotFound:
            return False
        return True

    def commit(
        self,
        *,
        job: str,
        session_id: str,
        disks: Sequence[str],
        parent: str | None,
        stats: dict[str, Any],
        restore_point_id: str | None = None,
        created: datetime | None = None,
    ) -> RestorePoint:
        """Make a session's staged fixed indexes a restore point, atomically.

        ``restore_point_id`` is the id the session chose when it started (a dirty
        bitmap may already carry it, a copy keeps its source's); None picks a new one.
        ``created``: a copy's source's creation time; None: now.

        The restore point's fixed indexes are written first, then its
        ``restorepoint.json`` with a put-if-absent: it exists whole or not at all.
        Committing a session that was already committed returns the existing restore
        point, also when another attempt at the same commit (an orchestrator restarted
        mid-commit) finishes first: of two markers only one can be created. The
        session's staging is removed afterwards.

        Raises:
            ConfigError: invalid or duplicate names, no disks.
            RestorePointNotFound: ``parent`` is not a committed restore point.
            RepositoryError: a disk has no staged fixed index.
            RepositoryFull: no space left; nothing was committed.
        """
        validate_name("job", job)
        validate_name("session", session_id)
        for disk in disks:
            validate_name("disk", disk)
        if not disks or len(set(disks)) != len(disks):
            raise ConfigError(f"committing session {session_id}: disks {list(disks)} invalid")
        if restore_point_id is not None and not is_restore_point_id(restore_point_id):
            raise ConfigError(
                f"committing session {session_id}: {restore_point_id!r} is not a restore point id"
            )
        existing = self.committed(job, session_id)
        if existing is not None:
            return existing
        if parent is not None:
            self.restore_point(parent)
        if restore_point_id is not None and self._exists(job, restore_point_id):
            raise ConfigError(
                f"committing session {session_id}: restore point {restore_point_id} is in"
                f" {self.storage.where()} already (a copy of it made before)"
            )
        staged = []
        entries = []
        for disk in disks:
            name = layout.staged_fixed_index(session_id, disk)
            try:
                data = self.storage.get(name)
            except ObjectNotFound as exc:
                # Another attempt at this commit may have finished meanwhile.
                existing = self.committed(job, session_id)
                if existing is not None:
                    return existing
                raise RepositoryError(
                    f"committing session {session_id} of job {job}: no fixed index staged "
                    f"for disk {disk}"
                ) from exc
            fidx = FixedIndex.decode(data, name)
            if fidx.block_size != self.block_size:
                raise CorruptionError(f"staged fixed index {name}: block size {fidx.block_size}")
            staged.append(data)
            file_name = layout.fixed_index_name(disk)
            entries.append(RestorePointDisk(disk, fidx.disk_size, file_name, checksum(data)))
        now = created or utc_now()
        point = RestorePoint(
            id=restore_point_id or new_restore_point_id(now),
            job=job,
            created=now,
            parent=parent,
            session_id=session_id,
            disks=tuple(entries),
            stats=dict(stats),
        )
        self._hooks.reached(Point.COMMIT_STARTED)
        try:
            # Two attempts with the same id write the same bytes: the puts may race.
            for entry, data in zip(entries, staged, strict=True):
                self.storage.put(layout.fixed_index(job, point.id, entry.name), data)
            self._hooks.reached(Point.COMMIT_INDEXES_WRITTEN)
            self.storage.put_new(layout.restore_point_file(job, point.id), point.to_json())
        except BlockferryError:  # ObjectExists: another attempt marked it first
            existing = self.committed(job, session_id)
            if existing is not None:
                return existing
            raise
        self._hooks.reached(Point.COMMIT_MARKED)
        log.info("committed restore point %s of job %s (session %s)", point.id, job, session_id)
        self.discard_staging(session_id)
        self._hooks.reached(Point.COMMIT_DONE)
        return point

    def _exists(self, job: str, rp_id: str) -> bool:
        try:
            self.storage.stat(layout.restore_point_file(job, rp_id))
        except ObjectNotFound:
            return False
        return True

    def committed(self, job: str, session_id: str) -> RestorePoint | None:
        """The restore point a session was committed as, if it was; its staging goes."""
        for existing in self.restore_points(job):
            if existing.session_id == session_id:
                log.info("session %s is already committed as %s", session_id, existing.id)
                self.discard_staging(session_id)
                return existing
        return None

    def discard_staging(self, session_id: str) -> None:
        """Remove a session's staging directory, once committed or when the session ended
        without a restore point (failed, cancelled); failures only cost space."""
        validate_name("session", session_id)
        prefix = layout.staging_prefix(session_id)
        try:
            self.storage.delete(*(info.name for info in self.storage.list_objects(prefix)))
        except RepositoryError as exc:
            log.warning("removing staged fixed indexes of session %s: %s", session_id, exc)

    def discard_committed_staging(self) -> int:
        """Remove the staging of sessions that have a restore point (a disk's end handled
        twice can stage again after the commit); returns how many. Only under the
        exclusive lock: no commit or staging runs meanwhile."""
        points = self.restore_points(strict=True)
        committed = self.staged_sessions() & {point.session_id for point in points}
        for session_id in sorted(committed):
            log.info("removing the staging of session %s, committed already", session_id)
            self.discard_staging(session_id)
        return len(committed)

    def jobs(self) -> list[str]:
        """Jobs with restore points, sorted."""
        return sorted({job for job, _ in self.restore_point_ids()})

    def restore_points(self, job: str | None = None, *, strict: bool = False) -> list[RestorePoint]:
        """Committed restore points, oldest first.

        A damaged one (or one a newer blockferry wrote) is logged and skipped, or with
        ``strict`` raises CorruptionError naming its file: what decides about deleting
        must not mistake an unreadable restore point for an absent one.
        """
        points = []
        for name, rp_id in self.restore_point_ids(job):
            try:
                points.append(self._load_restore_point(name, rp_id))
            except CorruptionError as exc:
                if strict:
                    raise
                log.warning("skipping damaged restore point: %s", exc)
            except RestorePointNotFound:
                continue
        points.sort(key=lambda point: (point.created, point.id))
        return points

    def remove(self, point: RestorePoint) -> None:
        """Remove a committed restore point: its marker first, so it disappears whole,
        then its fixed indexes; its chunks stay until garbage collection."""
        marker = layout.restore_point_file(point.job, point.id)
        prefix = layout.restore_point_prefix(point.job, point.id)
        rest = [info.name for info in self.storage.list_objects(prefix) if info.name != marker]
        self.storage.delete(marker, *rest)
        log.info("removed restore point %s of job %s", point.id, point.job)

    def remove_unmarked(self) -> int:
        """Remove the fixed indexes of restore points whose marker was never written (a
        commit killed half way); returns how many restore points' worth. Only under the
        exclusive lock: no commit runs meanwhile."""
        objects = self._restore_point_objects()
        unmarked = self.unmarked(objects)
        for prefix in unmarked:
            log.info("removing %s, left by a commit that never finished", prefix)
            self.storage.delete(*(prefix + name for name in sorted(objects[prefix])))
        return len(unmarked)

    def unmarked(self, objects: dict[str, set[str]] | None = None) -> list[str]:
        """``restorepoints/<job>/<id>/`` of every restore point whose marker is missing."""
        objects = self._restore_point_objects() if objects is None else objects
        return sorted(
            prefix for prefix, names in objects.items() if layout.RESTORE_POINT_FILE not in names
        )

    def restore_point_ids(self, job: str | None = None) -> list[tuple[str, str]]:
        """(job, id) of every committed restore point (one with its marker), sorted,
        without reading them."""
        prefix = layout.job_prefix(validate_name("job", job)) if job else layout.RESTORE_POINTS
        found = set()
        for info in self.storage.list_objects(prefix):
            parts = layout.parts(info.name, layout.RESTORE_POINTS)
            if (
                len(parts) == 3
                and parts[2] == layout.RESTORE_POINT_FILE
                and is_restore_point_id(parts[1])
            ):
                found.add((parts[0], parts[1]))
        return sorted(found)

    def _restore_point_objects(self) -> dict[str, set[str]]:
        """``restorepoints/<job>/<id>/`` -> the names of the objects under it."""
        objects: dict[str, set[str]] = {}
        for info in self.storage.list_objects(layout.RESTORE_POINTS):
            parts = layout.parts(info.name, layout.RESTORE_POINTS)
            if len(parts) == 3 and is_restore_point_id(parts[1]):
                prefix = layout.restore_point_prefix(parts[0], parts[1])
                objects.setdefault(prefix, set()).add(parts[2])
        return objects

    def restore_point(self, rp_id: str) -> RestorePoint:
        """The committed restore point ``rp_id``.

        Raises:
            RestorePointNotFound: there is none.
            CorruptionError: its restorepoint.json is damaged.
        """
        if is_restore_point_id(rp_id):
            for job, point_id in self.restore_point_ids():
                if point_id == rp_id:
                    return self._load_restore_point(job, rp_id)
        raise RestorePointNotFound(
            f"no committed restore point {rp_id!r} in {self.storage.where()}"
        )

    def latest_restore_point(self, job: str, disk: str) -> RestorePoint | None:
        """The newest restore point of ``job`` that has ``disk``, or None."""
        validate_name("disk", disk)
        for point in reversed(self.restore_points(job)):
            if disk in point.disk_names:
                return point
        return None

    def load_restore_point(self, job: str, rp_id: str) -> RestorePoint:
        """Read ``restorepoints/<job>/<rp_id>/restorepoint.json``; for verify and check."""
        return self._load_restore_point(validate_name("job", job), rp_id)

    def _load_restore_point(self, job: str, rp_id: str) -> RestorePoint:
        path = layout.restore_point_file(job, rp_id)
        try:
            data = self.storage.get(path)
        except ObjectNotFound as exc:
            raise RestorePointNotFound(f"no committed restore point {rp_id!r}") from exc
        point = RestorePoint.from_json(data, path)
        if point.id != rp_id or point.job != job:
            raise CorruptionError(
                f"reading {path}: describes restore point {point.id} of job {point.job}"
            )
        return point

    def fixed_index_name(self, point: RestorePoint, disk: str) -> str:
        """The object of a restore point's fixed index of ``disk``."""
        return layout.fixed_index(point.job, point.id, point.disk(disk).name)

    def read_fixed_index(self, point: RestorePoint, disk: str) -> FixedIndex:
        """A disk's fixed index in a restore point, checked against restorepoint.json.

        Raises:
            ConfigError: the restore point has no such disk.
            CorruptionError: the file is missing, truncated, or fails a checksum.
        """
        entry = point.disk(disk)
        path = self.fixed_index_name(point, disk)
        try:
            data = self.storage.get(path)
        except ObjectNotFound as exc:
            raise CorruptionError(f"reading fixed index {path}: file is missing") from exc
        fidx = FixedIndex.decode(data, path)
        if checksum(data) != entry.fidx_checksum:
            raise CorruptionError(
                f"reading fixed index {path}: file checksum does not match restorepoint.json"
            )
        if fidx.disk_size != entry.size or fidx.block_size != self.block_size:
            raise CorruptionError(
                f"reading fixed index {path}: disk of {fidx.disk_size} bytes in blocks of "
                f"{fidx.block_size}, restorepoint.json says {entry.size} bytes in blocks of "
                f"{self.block_size}"
            )
        return fidx
