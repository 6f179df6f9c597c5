"""The file catalog of restore points: built by walking every file system of every disk
once (after a backup, for jobs that ask for it), searched without opening a disk."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from blockferry.core.errors import FileSystemError
from blockferry.files.disk_files import opened_disk
from blockferry.repository.catalog import CatalogEntry, read_catalog, write_catalog
from blockferry.repository.ids import format_time
from blockferry.repository.repository import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """A version of a file in one restore point."""

    restore_point: str
    job: str
    created: str
    disk: str
    path: str
    size: int
    mtime_ns: int


def build_catalog(repo: Repository, rp_id: str) -> int:
    """Write the catalog of ``rp_id``: every entry of every file system on its disks (a
    disk with none that can be read has no entries). Returns how many entries.

    Raises:
        RestorePointNotFound: no such restore point.
        CorruptionError: a chunk the file systems' metadata needs is damaged.
        RepositoryFull: no room for the catalog (the restore point is untouched).
    """
    with repo.pin(rp_id, "file catalog"):  # prune keeps it until its catalog is written
        point = repo.restore_point(rp_id)
        entries: list[CatalogEntry] = []
        for disk in point.disk_names:
            try:
                with opened_disk(repo, rp_id, disk, pin=False) as files:
                    entries += [
                        CatalogEntry(disk, info.path, info.kind, info.size, info.mtime_ns)
                        for volume in files.volumes
                        for info in files.walk(volume.path)
                    ]
            except FileSystemError as exc:
                log.info("cataloguing disk %s of %s: %s", disk, rp_id, exc)
        return write_catalog(repo.storage, point, entries)


def find(repo: Repository, pattern: str, job: str | None = None) -> tuple[list[Found], list[str]]:
    """The files whose path or name matches ``pattern`` (shell wildcards) in the catalogs
    of ``job``'s restore points (every job's with None), oldest first; and the restore
    points searched that have no catalog."""
    found: list[Found] = []
    missing: list[str] = []
    for point in repo.restore_points(job):
        entries = read_catalog(repo.storage, point)
        if entries is None:
            missing.append(point.id)
            continue
        found += [
            Found(
                point.id,
                point.job,
                format_time(point.created),
                entry.disk,
                entry.path,
                entry.size,
                entry.mtime_ns,
            )
            for entry in _matching(entries, pattern)
        ]
    return found, missing


def _matching(entries: Iterator[CatalogEntry], pattern: str) -> Iterator[CatalogEntry]:
    by_path = "/" in pattern
    for entry in entries:
        if entry.kind == "dir":
            continue
        subject = entry.path if by_path else entry.path.rsplit("/", 1)[-1]
        if fnmatch.fnmatchcase(subject, pattern):
            yield entry
