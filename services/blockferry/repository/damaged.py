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

from blockferry.core.errors import CorruptionError, RepositoryError
from blockferry.repository import layout
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.ids import is_name
from blockferry.repository.repository import REPAIR_HINT, Repository
from blockferry.repository.storage import ObjectNotFound

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
                name = repo.fixed_index_name(point, disk.name)
                try:
                    header = repo.storage.get_range(name, 0, FixedIndex.HEADER_SIZE)
                except ObjectNotFound as exc:
                    raise CorruptionError(f"reading fixed index {name}: file is missing") from exc
                FixedIndex.check_header(header, name)
    except CorruptionError as exc:
        raise CorruptionError(
            f"repository {repo.where} holds metadata this blockferry cannot read: {exc}. "
            f"{REPAIR_HINT}"
        ) from exc


def set_aside(repo: Repository, ident: str, *, lock_wait: float = 0.0) -> str:
    """Move a damaged restore point (by its id) or a session's staged fixed indexes (by
    the session id) to ``damaged/``, under the exclusive lock; returns where it went.

    Set aside, it is no restore point any more (not listed, restored or pruned), so GC
    and prune stop tripping over it; its files are kept, and so are the chunks its fixed
    indexes name, so it can still be repaired and moved back. Deleting it from
    ``damaged/`` lets those chunks go at the next GC.

    Each object is copied as stored (a damaged one cannot be opened; a sealed one opens
    set aside, see :class:`SealedStorage`), then the originals are deleted, the restore
    point's marker first: killed half way, it is set aside and maybe still a restore
    point too, never neither.

    Raises:
        RepositoryError: there is no such restore point or staged session.
    """
    storage = repo.stored
    with repo.exclusive_lock(f"set aside {ident}", wait=lock_wait) as held:
        source = target = marker = None
        for job, rp_id in repo.restore_point_ids():
            if rp_id == ident:
                source = layout.restore_point_prefix(job, rp_id)
                target = layout.damaged_restore_point_prefix(job, rp_id)
                marker = layout.restore_point_file(job, rp_id)
        if (
            source is None
            and is_name(ident)
            and ident in repo.restore_point_store.staged_sessions()
        ):
            source = layout.staging_prefix(ident)
            target = layout.damaged_staging_prefix(ident)
        if source is None or target is None:
            raise RepositoryError(
                f"setting {ident!r} aside: no committed restore point or staged session of "
                f"that id in {repo.where}"
            )
        names = sorted(info.name for info in storage.list_objects(source))
        for name in names:
            storage.put(target + name[len(source) :], storage.get(name))
        held.check()
        first = [marker] if marker in names else []
        storage.delete(*first, *(name for name in names if name != marker))
    log.warning("set %s aside to %s", source, target)
    return target


def set_aside_prefixes(repo: Repository) -> list[str]:
    """The restore points and staged sessions in ``damaged/``."""
    found = set()
    for info in repo.storage.list_objects(layout.DAMAGED):
        parts = layout.parts(info.name, layout.DAMAGED)
        if parts[0] == "restorepoints" and len(parts) == 4:
            found.add(layout.damaged_restore_point_prefix(parts[1], parts[2]))
        elif parts[0] == "staging" and len(parts) == 3:
            found.add(layout.damaged_staging_prefix(parts[1]))
    return sorted(found)


def set_aside_digests(repo: Repository) -> set[bytes]:
    """The chunk digests the fixed indexes in ``damaged/`` name, as far as they can be
    read (see :meth:`FixedIndex.salvage`)."""
    found: set[bytes] = set()
    for info in sorted(repo.storage.list_objects(layout.DAMAGED), key=lambda i: i.name):
        if info.name.endswith(layout.FIXED_INDEX_SUFFIX):
            found |= FixedIndex.salvage(repo.storage.get(info.name))
    return found
