"""Restore a file or a tree from a backed-up disk's file system to a local directory.

What is kept: file contents, modes, owners (when running as root, as ``tar`` and restic
do), modification and access times (to the nanosecond), symlinks as symlinks, and holes:
a run of zeros of at least :data:`HOLE` bytes is skipped (not written) so a sparse file
stays sparse, as ``cp --sparse=always`` does. Hard links become separate files, and
devices, fifos and sockets are reported as skipped.

Each file is written under a temporary name and renamed into place once whole, so a
file that fails (a damaged chunk under it) leaves nothing behind; the error is recorded
for that file and the rest of the tree is restored. Existing entries are replaced only
with ``overwrite``, and a symlink already at a place where a directory goes is never
followed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from blockferry.core.errors import BlockferryError, DestinationError
from blockferry.files.disk_files import DiskFiles, FileInfo

COPY_BYTES = 1024 * 1024
HOLE = 4096
"""The smallest run of zeros (aligned in the file) written as a hole."""


@dataclass
class FileRestoreResult:
    """What a file restore did; ``failed`` and ``skipped`` map a path to why."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "bytes": self.bytes,
            "failed": self.failed,
            "skipped": self.skipped,
        }


def restore_files(
    files: DiskFiles, path: str, destination: Path, *, overwrite: bool = False
) -> FileRestoreResult:
    """Restore ``path`` (a file, symlink or directory tree) into the existing directory
    ``destination``, as ``destination/<its name>``.

    Raises:
        FileSystemError: ``path`` is not there.
        DestinationError: ``destination`` is not a directory, or the entry is there
            already and ``overwrite`` is off.
    """
    top = files.stat(path)
    if not destination.is_dir():
        raise DestinationError(f"restoring {path}: {destination} is not a directory")
    target = destination / (top.name or "root")
    if os.path.lexists(target) and not overwrite:
        raise DestinationError(
            f"restoring {path}: {target} exists; restore elsewhere or allow overwriting"
        )
    result = FileRestoreResult()
    _restore(files, top, target, result, overwrite)
    return result


def _restore(
    files: DiskFiles, info: FileInfo, target: Path, result: FileRestoreResult, overwrite: bool
) -> None:
    try:
        if info.kind == "dir":
            _restore_dir(files, info, target, result, overwrite)
        elif info.kind == "file":
            _publish(target, lambda temp: _write_file(files, info, temp), overwrite)
            _set_metadata(target, info)
            result.files += 1
            result.bytes += info.size
        elif info.kind == "symlink":
            _publish(target, lambda temp: os.symlink(info.target or "", temp), overwrite)
            _set_metadata(target, info)
            result.symlinks += 1
        else:
            result.skipped[info.path] = f"a special file (mode {info.mode:o}) is not restored"
    except (BlockferryError, OSError) as exc:
        result.failed[info.path] = str(exc)


def _restore_dir(
    files: DiskFiles, info: FileInfo, target: Path, result: FileRestoreResult, overwrite: bool
) -> None:
    if os.path.islink(target) or (os.path.lexists(target) and not target.is_dir()):
        if not overwrite:
            raise DestinationError(f"{target} exists and is not a directory")
        target.unlink()
    target.mkdir(mode=0o700, exist_ok=overwrite)
    for child in files.list(info.path):
        if "/" in child.name or child.name in ("", ".", ".."):
            result.failed[child.path] = f"refused the name {child.name!r}"
            continue
        _restore(files, child, target / child.name, result, overwrite)
    _set_metadata(target, info)
    result.dirs += 1


def _publish(target: Path, make: object, overwrite: bool) -> None:
    """Make ``target`` under a temporary name with ``make(temp)``, then rename it into
    place; nothing is left behind when ``make`` fails."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        make(temp)  # type: ignore[operator]
        if not overwrite and os.path.lexists(target):
            raise DestinationError(f"{target} exists")
        if os.path.isdir(target) and not os.path.islink(target):
            raise DestinationError(f"{target} exists and is a directory")
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _write_file(files: DiskFiles, info: FileInfo, temp: Path) -> None:
    """Copy the file's bytes into ``temp``, leaving aligned runs of zeros as holes."""
    zero = bytes(HOLE)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with files.open(info.path) as source:
            position = 0
            while data := source.read(COPY_BYTES):
                view = memoryview(data)
                for start in range(0, len(data), HOLE):
                    piece = view[start : start + HOLE]
                    if piece != zero[: len(piece)]:
                        os.pwrite(fd, piece, position + start)
                position += len(data)
        if position != info.size:
            raise DestinationError(
                f"reading {info.path}: got {position} bytes, its size is {info.size}"
            )
        os.ftruncate(fd, position)
    finally:
        os.close(fd)


def _set_metadata(target: Path, info: FileInfo) -> None:
    """Owner (as root), mode and times of ``target`` itself (a symlink is not followed)."""
    if os.geteuid() == 0:
        os.chown(target, info.uid, info.gid, follow_symlinks=False)
    if info.kind != "symlink":
        os.chmod(target, stat.S_IMODE(info.mode))
    os.utime(target, ns=(info.atime_ns, info.mtime_ns), follow_symlinks=False)
