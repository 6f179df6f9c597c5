"""Metadata that cannot be read: found at start-up, and set aside by the operator.

What cannot be read is never taken for garbage. GC and prune stop at a restore point,
fixed index or staged fixed index they cannot parse (damaged, or written by a newer
blockferry) and name it; the target side's start-up names what it cannot read
(:func:`check_metadata`) and deletes nothing. The operator's way out that keeps the data:
``blockferry repo check`` names the file, then it is repaired, or set aside with
``blockferry repo set-aside`` (:func:`set_aside`): moved to ``damaged/``, where it is no
restore point any more, while GC keeps every chunk its fixed indexes name as far as
they can be read (:func:`set_aside_digests`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from blockferry.core.errors import CorruptionError, RepositoryError
from blockferry.repository.files import (
    fsync_dir,
    is_temporary,
    list_dir,
    make_dirs,
    read_file,
    storage_error,
)
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.ids import is_name
from blockferry.repository.layout import FIXED_INDEX_SUFFIX
from blockferry.repository.repository import REPAIR_HINT, Repository

log = logging.getLogger(__name__)


def check_metadata(repo: Repository) -> None:
    """Read every restorepoint.json, every fixed index's header and every staged fixed
    index; cheap enough for each start-up (a committed fixed index's digests are read
    by GC and verify, not here).

    Raises:
        CorruptionError: naming the first file that cannot be read, and what to do.
    """
    try:
        repo.staged_fixed_indexes()
        for point in repo.restore_points(strict=True):
            for disk in point.disks:
                path = repo.fixed_index_path(point, disk.name)
                try:
                    with path.open("rb") as file:
                        FixedIndex.check_header(file.read(FixedIndex.HEADER_SIZE), str(path))
                except FileNotFoundError as exc:
                    raise CorruptionError(f"reading fixed index {path}: file is missing") from exc
                except OSError as exc:
                    raise storage_error(f"reading fixed index {path}", exc) from exc
    except CorruptionError as exc:
        raise CorruptionError(
            f"repository {repo.path} holds metadata this blockferry cannot read: {exc}. "
            f"{REPAIR_HINT}"
        ) from exc


def set_aside(repo: Repository, ident: str, *, lock_wait: float = 0.0) -> Path:
    """Move a damaged restore point (by its id) or a session's staged fixed indexes (by
    the session id) to ``damaged/``, under the exclusive lock; returns where it went.

    Set aside, it is no restore point any more (not listed, restored or pruned), so GC
    and prune stop tripping over it; its files are kept, and so are the chunks its fixed
    indexes name, so it can still be repaired and moved back. Deleting it from
    ``damaged/`` lets those chunks go at the next GC.

    Raises:
        RepositoryError: there is no such restore point or staged session.
    """
    layout = repo.layout
    with repo.exclusive_lock(f"set aside {ident}", wait=lock_wait) as held:
        source = target = None
        for job, rp_id in repo.restore_point_ids():
            if rp_id == ident:
                source = layout.restore_point_dir(job, rp_id)
                target = layout.damaged_restore_point(job, rp_id)
        if source is None and is_name(ident) and layout.staging_dir(ident).is_dir():
            source = layout.staging_dir(ident)
            target = layout.damaged_staging(ident)
        if source is None or target is None:
            raise RepositoryError(
                f"setting {ident!r} aside: no committed restore point or staged session of "
                f"that id in {repo.path}"
            )
        make_dirs(target.parent)
        held.check()
        try:
            os.rename(source, target)
        except OSError as exc:
            raise storage_error(f"setting {ident} aside to {target}", exc) from exc
        fsync_dir(source.parent)
        fsync_dir(target.parent)
    log.warning("set %s aside to %s", layout.relative(source), layout.relative(target))
    return target


def set_aside_paths(repo: Repository) -> list[Path]:
    """The restore points and staged sessions in ``damaged/``."""
    found = []
    for kind in ("restorepoints", "staging"):
        top = repo.layout.damaged / kind
        for name in sorted(list_dir(top)):
            entry = top / name
            if kind == "restorepoints":
                found += [entry / rp for rp in sorted(list_dir(entry)) if not is_temporary(rp)]
            elif not is_temporary(name):
                found.append(entry)
    return found


def set_aside_digests(repo: Repository) -> set[bytes]:
    """The chunk digests the fixed indexes in ``damaged/`` name, as far as they can be
    read (see :meth:`FixedIndex.salvage`)."""
    found: set[bytes] = set()
    for directory in set_aside_paths(repo):
        for name in sorted(list_dir(directory)):
            if name.endswith(FIXED_INDEX_SUFFIX) and not is_temporary(name):
                found |= FixedIndex.salvage(read_file(directory / name))
    return found
