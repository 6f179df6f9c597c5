"""Offline check: structural consistency without reading chunk bodies.

Checks config.json, every pack's header and footer, every pack index file
against its pack, every restore point's restorepoint.json and fixed indexes,
and that every digest a restore point references is in the pack index.
Use :func:`~blockferry.repository.verify.verify` to read the chunks too.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, field
from typing import Any

from blockferry.core.errors import BlockferryError, CorruptionError
from blockferry.repository import layout
from blockferry.repository.config import RepositoryConfig
from blockferry.repository.damaged import set_aside_prefixes
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.pack import PackEntry
from blockferry.repository.pack_index import decode_index_file, list_index_files
from blockferry.repository.repository import Repository

_DIGESTS_NAMED = 3


class ProblemKind(enum.StrEnum):
    """Which structure a problem is in."""

    CONFIG = "config"
    PACK = "pack"
    INDEX = "index"
    RESTORE_POINT = "restorepoint"
    FIXED_INDEX = "fidx"
    STAGED_FIXED_INDEX = "staged-fidx"
    MISSING_CHUNK = "missing-chunk"


@dataclass(frozen=True)
class Problem:
    """One inconsistency, with the path (relative to the repository) it is in."""

    kind: ProblemKind
    path: str
    detail: str

    def describe(self) -> str:
        """One line for people."""
        return f"{self.kind}: {self.path}: {self.detail}"


@dataclass
class CheckReport:
    """What check looked at and what it found."""

    packs_checked: int = 0
    index_files_checked: int = 0
    restore_points_checked: int = 0
    chunks_indexed: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found (warnings do not count)."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-compatible data."""
        return {
            "ok": self.ok,
            "packs_checked": self.packs_checked,
            "index_files_checked": self.index_files_checked,
            "restore_points_checked": self.restore_points_checked,
            "chunks_indexed": self.chunks_indexed,
            "problems": [
                {"kind": str(p.kind), "path": p.path, "detail": p.detail} for p in self.problems
            ],
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """Lines for people: problems, warnings, then the totals."""
        lines = [problem.describe() for problem in self.problems]
        lines += [f"warning: {warning}" for warning in self.warnings]
        verdict = "ok" if self.ok else f"{len(self.problems)} problems"
        lines.append(
            f"checked {self.packs_checked} packs, {self.index_files_checked} index files "
            f"({self.chunks_indexed} chunks), {self.restore_points_checked} restore points: "
            f"{verdict}"
        )
        return "\n".join(lines)


def check(repo: Repository, *, lock: bool = True) -> CheckReport:
    """Check a repository's structure; see the module docstring.

    Args:
        lock: hold a shared lock while checking (off for a read-only repository).
    """
    with repo.shared_lock("check") if lock else contextlib.nullcontext():
        report = CheckReport()
        _check_config(repo, report)
        footers = _check_packs(repo, report)
        _check_index_files(repo, footers, report)
        _check_restore_points(repo, report)
        _check_staging(repo, report)
        report.warnings += [
            f"set aside (its chunks are kept; repair it and move it back, or delete it): {prefix}"
            for prefix in set_aside_prefixes(repo)
        ]
        report.warnings += [
            f"fixed indexes without a commit marker (a commit killed half way; the next "
            f"GC removes them): {prefix}"
            for prefix in repo.restore_point_store.unmarked()
        ]
        report.warnings += [
            f"temporary file left behind: {info.name}" for info in repo.storage.leftovers()
        ]
        return report


def _check_config(repo: Repository, report: CheckReport) -> None:
    try:
        config = RepositoryConfig.from_json(repo.storage.get(layout.CONFIG_FILE), "config.json")
    except BlockferryError as exc:
        report.problems.append(Problem(ProblemKind.CONFIG, "config.json", str(exc)))
        return
    if config.to_json() != repo.config.to_json():
        report.problems.append(
            Problem(ProblemKind.CONFIG, "config.json", "changed since the repository was opened")
        )


def _check_packs(repo: Repository, report: CheckReport) -> dict[str, list[PackEntry] | None]:
    footers: dict[str, list[PackEntry] | None] = {}
    for pack_id in repo.sealed_pack_ids():
        report.packs_checked += 1
        try:
            footers[pack_id] = repo.pack_entries(pack_id)
        except BlockferryError as exc:
            footers[pack_id] = None
            report.problems.append(Problem(ProblemKind.PACK, layout.pack(pack_id), str(exc)))
    return footers


def _check_index_files(
    repo: Repository, footers: dict[str, list[PackEntry] | None], report: CheckReport
) -> None:
    index_ids = list_index_files(repo.storage)
    for pack_id in sorted(index_ids):
        report.index_files_checked += 1
        relative = layout.index_file(pack_id)
        try:
            entries = decode_index_file(repo.storage.get(relative), pack_id, relative)
        except BlockferryError as exc:
            report.problems.append(Problem(ProblemKind.INDEX, relative, str(exc)))
            continue
        report.chunks_indexed += len(entries)
        if pack_id not in footers:
            report.problems.append(
                Problem(ProblemKind.INDEX, relative, f"pack {pack_id} does not exist")
            )
        elif footers[pack_id] is not None and entries != footers[pack_id]:
            report.problems.append(
                Problem(ProblemKind.INDEX, relative, "does not match the pack's footer")
            )
    for pack_id in sorted(set(footers) - index_ids.keys()):
        report.problems.append(
            Problem(
                ProblemKind.INDEX,
                layout.index_file(pack_id),
                f"pack {pack_id} has no index file; run `blockferry repo rebuild-index`",
            )
        )


def _check_staging(repo: Repository, report: CheckReport) -> None:
    for name in repo.restore_point_store.staged_names():
        try:
            FixedIndex.decode(repo.storage.get(name), name)
        except BlockferryError as exc:
            report.problems.append(Problem(ProblemKind.STAGED_FIXED_INDEX, name, str(exc)))


def _check_restore_points(repo: Repository, report: CheckReport) -> None:
    repo.refresh_index()
    for job, rp_id in repo.restore_point_ids():
        report.restore_points_checked += 1
        try:
            point = repo.load_restore_point(job, rp_id)
        except CorruptionError as exc:
            path = layout.restore_point_file(job, rp_id)
            report.problems.append(Problem(ProblemKind.RESTORE_POINT, path, str(exc)))
            continue
        for disk in point.disks:
            path = repo.fixed_index_name(point, disk.name)
            try:
                fidx = repo.read_fixed_index(point, disk.name)
            except CorruptionError as exc:
                report.problems.append(Problem(ProblemKind.FIXED_INDEX, path, str(exc)))
                continue
            missing = sorted(d.hex() for d in fidx.chunk_digests() if repo.locate(d) is None)
            if missing:
                named = ", ".join(missing[:_DIGESTS_NAMED])
                more = f" and {len(missing) - _DIGESTS_NAMED} more" if len(missing) > 3 else ""
                report.problems.append(
                    Problem(
                        ProblemKind.MISSING_CHUNK,
                        path,
                        f"{len(missing)} chunks of restore point {rp_id} are not in the "
                        f"index: {named}{more}",
                    )
                )
