"""Restore points on disk: staging fixed indexes, committing, listing, reading.

A restore point that is not committed does not exist: the commit builds
``restorepoints/<job>/.tmp-<id>/`` and renames it into place, so readers see
a restore point whole or not at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blockferry.core.blocks import checksum
from blockferry.core.errors import (
    ConfigError,
    CorruptionError,
    RepositoryError,
    RestorePointNotFound,
)
from blockferry.failpoints import Point
from blockferry.repository.files import (
    copy_atomic,
    fsync_dir,
    is_temporary,
    list_dir,
    make_dirs,
    read_file,
    remove_tree,
    remove_tree_quietly,
    storage_error,
    write_atomic,
)
from blockferry.repository.fixed_index import DigestArray, FixedIndex
from blockferry.repository.hooks import Hooks
from blockferry.repository.ids import (
    is_restore_point_id,
    new_restore_point_id,
    utc_now,
    validate_name,
)
from blockferry.repository.layout import FIXED_INDEX_SUFFIX, RESTORE_POINT_FILE, Layout
from blockferry.repository.restore_point import RestorePoint, RestorePointDisk

log = logging.getLogger(__name__)


class RestorePointStore:
    """The ``restorepoints/`` and ``staging/`` directories of a repository."""

    def __init__(self, layout: Layout, block_size: int, hooks: Hooks) -> None:
        self.layout = layout
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
        directory = self.layout.staging_dir(session_id)
        make_dirs(directory)
        write_atomic(self.layout.staged_fixed_index(session_id, disk), fidx.encode())

    def staged_fixed_indexes(self) -> list[FixedIndex]:
        """Every staged fixed index; a damaged one raises CorruptionError."""
        found = []
        for session in sorted(list_dir(self.layout.staging)):
            directory = self.layout.staging_dir(session)
            for name in sorted(list_dir(directory)):
                if name.endswith(FIXED_INDEX_SUFFIX) and not is_temporary(name):
                    path = directory / name
                    found.append(FixedIndex.decode(read_file(path), str(path)))
        return found

    def commit(
        self,
        *,
        job: str,
        session_id: str,
        disks: Sequence[str],
        parent: str | None,
        stats: dict[str, Any],
        restore_point_id: str | None = None,
    ) -> RestorePoint:
        """Make a session's staged fixed indexes a restore point, atomically.

        ``restore_point_id`` is the id the session chose when it started (a dirty
        bitmap may already carry it); None picks a new one.

        The restore point is built in ``restorepoints/<job>/.tmp-<id>/`` and
        renamed to ``<id>``: it exists whole or not at all. Committing a session
        that was already committed returns the existing restore point, also when
        another attempt at the same commit (an orchestrator restarted mid-commit)
        finishes first: each attempt builds in a directory of its own, and only one
        rename into place can succeed. The session's staging directory is removed
        afterwards.

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
        staged = [self.layout.staged_fixed_index(session_id, disk) for disk in disks]
        entries = []
        for disk, path in zip(disks, staged, strict=True):
            try:
                data = read_file(path)
            except FileNotFoundError as exc:
                # Another attempt at this commit may have finished meanwhile.
                existing = self.committed(job, session_id)
                if existing is not None:
                    return existing
                raise RepositoryError(
                    f"committing session {session_id} of job {job}: no fixed index staged "
                    f"for disk {disk}"
                ) from exc
            fidx = FixedIndex.decode(data, str(path))
            if fidx.block_size != self.block_size:
                raise CorruptionError(f"staged fixed index {path}: block size {fidx.block_size}")
            entries.append(RestorePointDisk(disk, fidx.disk_size, path.name, checksum(data)))
        now = utc_now()
        point = RestorePoint(
            id=restore_point_id or new_restore_point_id(now),
            job=job,
            created=now,
            parent=parent,
            session_id=session_id,
            disks=tuple(entries),
            stats=dict(stats),
        )
        job_dir = self.layout.job_dir(job)
        make_dirs(job_dir)
        # Unique per attempt: two attempts at one commit never share a directory.
        temp = self.layout.restore_point_temp_dir(job, point.id)
        try:
            temp.mkdir()
            self._hooks.reached(Point.COMMIT_TEMP_CREATED)
            for path in staged:
                copy_atomic(path, temp / path.name)
            write_atomic(temp / RESTORE_POINT_FILE, point.to_json())
            self._hooks.reached(Point.COMMIT_TEMP_READY)
            # rename(2) never replaces a non-empty directory: of two attempts one wins.
            os.rename(temp, self.layout.restore_point_dir(job, point.id))
        except (OSError, RepositoryError) as exc:
            remove_tree_quietly(temp)
            existing = self.committed(job, session_id)
            if existing is not None:
                return existing
            if isinstance(exc, OSError):
                what = f"committing restore point {point.id} of job {job}"
                raise storage_error(what, exc) from exc
            raise
        except BaseException:
            remove_tree_quietly(temp)
            raise
        fsync_dir(job_dir)
        self._hooks.reached(Point.COMMIT_RENAMED)
        log.info("committed restore point %s of job %s (session %s)", point.id, job, session_id)
        self.discard_staging(session_id)
        self._hooks.reached(Point.COMMIT_DONE)
        return point

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
        try:
            remove_tree(self.layout.staging_dir(session_id))
        except RepositoryError as exc:
            log.warning("removing staged fixed indexes of session %s: %s", session_id, exc)

    def discard_committed_staging(self) -> int:
        """Remove the staging of sessions that have a restore point (a disk's end handled
        twice can stage again after the commit); returns how many. Only under the
        exclusive lock: no commit or staging runs meanwhile."""
        staged = {name for name in list_dir(self.layout.staging) if not is_temporary(name)}
        committed = staged & {point.session_id for point in self.restore_points(strict=True)}
        for session_id in sorted(committed):
            log.info("removing the staging of session %s, committed already", session_id)
            self.discard_staging(session_id)
        return len(committed)

    def jobs(self) -> list[str]:
        """Jobs with a restore points directory, sorted."""
        return sorted(
            name
            for name in list_dir(self.layout.restore_points)
            if not is_temporary(name) and (self.layout.restore_points / name).is_dir()
        )

    def restore_points(self, job: str | None = None, *, strict: bool = False) -> list[RestorePoint]:
        """Committed restore points, oldest first.

        A damaged one (or one a newer blockferry wrote) is logged and skipped, or with
        ``strict`` raises CorruptionError naming its file: what decides about deleting
        must not mistake an unreadable restore point for an absent one.
        """
        jobs = [validate_name("job", job)] if job is not None else self.jobs()
        points = []
        for name in jobs:
            for rp_id in list_dir(self.layout.job_dir(name)):
                if not is_restore_point_id(rp_id):
                    continue
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
        """Remove a committed restore point: renamed aside first, so it disappears whole;
        its chunks stay until garbage collection."""
        job_dir = self.layout.job_dir(point.job)
        aside = self.layout.restore_point_temp_dir(point.job, point.id)
        try:
            os.rename(self.layout.restore_point_dir(point.job, point.id), aside)
        except OSError as exc:
            what = f"removing restore point {point.id} of job {point.job}"
            raise storage_error(what, exc) from exc
        fsync_dir(job_dir)
        remove_tree(aside)
        log.info("removed restore point %s of job %s", point.id, point.job)

    def restore_point_ids(self, job: str | None = None) -> list[tuple[str, str]]:
        """(job, id) of every committed restore point directory, without reading them."""
        jobs = [validate_name("job", job)] if job is not None else self.jobs()
        return [
            (name, rp_id)
            for name in jobs
            for rp_id in sorted(list_dir(self.layout.job_dir(name)))
            if is_restore_point_id(rp_id)
        ]

    def restore_point(self, rp_id: str) -> RestorePoint:
        """The committed restore point ``rp_id``.

        Raises:
            RestorePointNotFound: there is none.
            CorruptionError: its restorepoint.json is damaged.
        """
        if is_restore_point_id(rp_id):
            for job in self.jobs():
                if self.layout.restore_point_dir(job, rp_id).is_dir():
                    return self._load_restore_point(job, rp_id)
        raise RestorePointNotFound(f"no committed restore point {rp_id!r} in {self.layout.root}")

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
        path = self.layout.restore_point_file(job, rp_id)
        try:
            data = read_file(path)
        except FileNotFoundError as exc:
            if self.layout.restore_point_dir(job, rp_id).is_dir():
                raise CorruptionError(f"reading {path}: file is missing") from exc
            raise RestorePointNotFound(f"no committed restore point {rp_id!r}") from exc
        point = RestorePoint.from_json(data, str(path))
        if point.id != rp_id or point.job != job:
            raise CorruptionError(
                f"reading {path}: describes restore point {point.id} of job {point.job}"
            )
        return point

    def fixed_index_path(self, point: RestorePoint, disk: str) -> Path:
        """Where a restore point's fixed index of ``disk`` lives."""
        return self.layout.fixed_index(point.job, point.id, point.disk(disk).name)

    def read_fixed_index(self, point: RestorePoint, disk: str) -> FixedIndex:
        """A disk's fixed index in a restore point, checked against restorepoint.json.

        Raises:
            ConfigError: the restore point has no such disk.
            CorruptionError: the file is missing, truncated, or fails a checksum.
        """
        entry = point.disk(disk)
        path = self.fixed_index_path(point, disk)
        try:
            data = read_file(path)
        except FileNotFoundError as exc:
            raise CorruptionError(f"reading fixed index {path}: file is missing") from exc
        fidx = FixedIndex.decode(data, str(path))
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
