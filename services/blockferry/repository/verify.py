"""Offline verify: read every chunk the restore points reference and check it.

Unlike :func:`~blockferry.repository.check.check`, verify reads chunk bodies:
each chunk's checksum and keyed digest are recomputed. The report names each
damaged thing (restorepoint.json, fixed index, pack, chunk) and the restore
points it affects.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blockferry.core.errors import CorruptionError, RestorePointNotFound
from blockferry.repository import layout
from blockferry.repository.pack import PackEntry
from blockferry.repository.repository import Repository


class DamageKind(enum.StrEnum):
    """What is damaged."""

    RESTORE_POINT = "restorepoint"
    FIXED_INDEX = "fidx"
    PACK = "pack"
    CHUNK = "chunk"
    MISSING_CHUNK = "missing-chunk"


@dataclass(frozen=True)
class Damage:
    """One damaged thing and the restore points that cannot be restored because of it."""

    kind: DamageKind
    path: str
    detail: str
    restore_points: tuple[str, ...]
    digest: str | None = None
    pack_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The damage as JSON-compatible data."""
        return {
            "kind": str(self.kind),
            "path": self.path,
            "detail": self.detail,
            "restore_points": list(self.restore_points),
            "digest": self.digest,
            "pack_id": self.pack_id,
        }

    def describe(self) -> str:
        """One line for people."""
        subject = f"chunk {self.digest} in {self.path}" if self.digest else self.path
        affected = ", ".join(self.restore_points) or "none"
        return f"{self.kind}: {subject}: {self.detail} (affects restore points: {affected})"


@dataclass
class VerifyReport:
    """What verify read and what it found damaged."""

    restore_points: list[str] = field(default_factory=list)
    chunks_checked: int = 0
    bytes_read: int = 0
    damage: list[Damage] = field(default_factory=list)
    quarantined: list[PackEntry] = field(default_factory=list)
    """The damaged chunk copies this verify quarantined."""

    @property
    def ok(self) -> bool:
        """Whether nothing is damaged."""
        return not self.damage

    @property
    def damaged_restore_points(self) -> list[str]:
        """Restore points that cannot be restored whole, sorted."""
        return sorted({rp for damage in self.damage for rp in damage.restore_points})

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-compatible data."""
        return {
            "ok": self.ok,
            "restore_points": list(self.restore_points),
            "chunks_checked": self.chunks_checked,
            "bytes_read": self.bytes_read,
            "damaged_restore_points": self.damaged_restore_points,
            "damage": [damage.to_dict() for damage in self.damage],
            "quarantined": sorted({entry.digest.hex() for entry in self.quarantined}),
        }

    def summary(self) -> str:
        """Lines for people: one per damaged thing, then the totals."""
        lines = [damage.describe() for damage in self.damage]
        verdict = "ok" if self.ok else f"{len(self.damage)} damaged"
        lines.append(
            f"verified {len(self.restore_points)} restore points, {self.chunks_checked} chunks "
            f"({self.bytes_read} bytes read): {verdict}"
        )
        if not self.ok:
            lines.append(f"restore points affected: {', '.join(self.damaged_restore_points)}")
        return "\n".join(lines)


def verify(
    repo: Repository,
    rp_id: str | None = None,
    *,
    lock: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify every committed restore point, or only ``rp_id``.

    A chunk that fails its checksum or digest is quarantined (unless ``lock`` is off:
    a read-only repository): it is never located again, so the next backup that has the
    block sends it again and heals every restore point that names it.

    Args:
        lock: hold a shared lock while verifying (off for a read-only repository).
        progress: called with (chunks done, chunks to check) after each chunk.

    Raises:
        RestorePointNotFound: ``rp_id`` is given and not committed.
    """
    with repo.shared_lock("verify") if lock else contextlib.nullcontext():
        return _verify(repo, rp_id, progress, quarantine=lock)


def _verify(
    repo: Repository,
    rp_id: str | None,
    progress: Callable[[int, int], None] | None,
    *,
    quarantine: bool,
) -> VerifyReport:
    report = VerifyReport()
    points = repo.restore_point_ids()
    if rp_id is not None:
        points = [(job, point) for job, point in points if point == rp_id]
        if not points:
            raise RestorePointNotFound(f"no committed restore point {rp_id!r} in {repo.where}")
    users: dict[bytes, set[str]] = {}
    for job, point_id in points:
        report.restore_points.append(point_id)
        try:
            point = repo.load_restore_point(job, point_id)
        except CorruptionError as exc:
            path = layout.restore_point_file(job, point_id)
            report.damage.append(Damage(DamageKind.RESTORE_POINT, path, str(exc), (point_id,)))
            continue
        for disk in point.disks:
            try:
                fidx = repo.read_fixed_index(point, disk.name)
            except CorruptionError as exc:
                path = repo.fixed_index_name(point, disk.name)
                report.damage.append(Damage(DamageKind.FIXED_INDEX, path, str(exc), (point_id,)))
                continue
            for chunk_digest in fidx.chunk_digests():
                users.setdefault(chunk_digest, set()).add(point_id)

    repo.refresh_index()
    by_pack: dict[str, list[PackEntry]] = {}
    for chunk_digest, affected in sorted(users.items()):
        entry = repo.locate(chunk_digest)
        if entry is None:
            report.damage.append(
                Damage(
                    DamageKind.MISSING_CHUNK,
                    "index",
                    "no pack holds a good copy of this chunk",
                    tuple(sorted(affected)),
                    digest=chunk_digest.hex(),
                )
            )
        else:
            by_pack.setdefault(entry.pack_id, []).append(entry)

    total = sum(len(entries) for entries in by_pack.values())
    done = 0
    packs = repo.sealed_packs()
    for pack_id, entries in sorted(by_pack.items()):
        relative = layout.pack(pack_id)
        if pack_id not in packs:
            affected = {rp for entry in entries for rp in users[entry.digest]}
            report.damage.append(
                Damage(
                    DamageKind.PACK,
                    relative,
                    f"pack file is missing ({len(entries)} chunks referenced)",
                    tuple(sorted(affected)),
                    pack_id=pack_id,
                )
            )
            done += len(entries)
            continue
        for entry in sorted(entries, key=lambda e: e.offset):
            try:
                repo.read_entry(entry)
                report.chunks_checked += 1
                report.bytes_read += entry.stored_size
            except CorruptionError as exc:
                detail = str(exc)
                if quarantine:
                    repo.quarantine(entry, detail)
                    report.quarantined.append(entry)
                    detail += "; quarantined: the next backup of this data stores it again"
                report.damage.append(
                    Damage(
                        DamageKind.CHUNK,
                        relative,
                        detail,
                        tuple(sorted(users[entry.digest])),
                        digest=entry.digest.hex(),
                        pack_id=pack_id,
                    )
                )
            done += 1
            if progress is not None:
                progress(done, total)
    return report
