"""The file systems on a backed-up disk, read by the parsers of dissect.target.

Nothing is mounted and no tool is run: dissect reads the partition table (MBR, GPT), LVM
and the file system (ext2/3/4, XFS, Btrfs, NTFS, FAT, exFAT) from a file-like view of the
disk, which reads only the blocks it needs.

**Paths.** A disk may hold several file systems, so a path's first component names a
volume: ``/p1/etc/hosts`` is ``/etc/hosts`` on partition 1, ``/vg0-root/etc`` a logical
volume (volume group ``vg0``, volume ``root``), and ``/disk/...`` a file system written
on the whole disk, without a partition table. ``/`` lists the volumes.

This module is the only one that imports dissect; its errors become
:class:`~blockferry.core.errors.FileSystemError` here, and a repository error under them
(a damaged chunk) is raised as itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from blockferry.core.errors import BlockferryError, FileSystemError
from blockferry.repository.disk_reader import DiskFile, DiskReader
from blockferry.repository.repository import Repository

log = logging.getLogger(__name__)

ROOT_MODE = stat.S_IFDIR | 0o555


@dataclass(frozen=True)
class FileInfo:
    """One directory entry: what ``ls -l`` shows, plus its times in nanoseconds."""

    path: str
    name: str
    kind: str
    """``file``, ``dir``, ``symlink`` or ``other`` (a device, fifo or socket)."""
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    target: str | None = None
    """A symlink's target."""
    filesystem: str | None = None
    """A volume's file system type (``ext``, ``xfs``, ...), in the listing of ``/``."""

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-compatible data (mode in octal, as ``stat`` prints it)."""
        document = {
            "path": self.path,
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "mode": f"{stat.S_IMODE(self.mode):04o}",
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "atime_ns": self.atime_ns,
        }
        if self.target is not None:
            document["target"] = self.target
        if self.filesystem is not None:
            document["filesystem"] = self.filesystem
        return document


class DiskFiles:
    """The volumes and file systems of one disk, opened from ``disk`` (seekable).

    Args:
        label: how messages name the disk (``disk sda of restore point ...``).

    Raises:
        FileSystemError: no file system that can be read is on the disk.
    """

    def __init__(self, disk: BinaryIO, label: str) -> None:
        self.label = label
        self._filesystems: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        with _translated(f"reading the partitions of {label}"):
            for name, volume in _volumes(disk):
                filesystem = _open_filesystem(volume, f"volume {name} of {label}")
                if filesystem is not None:
                    self._filesystems[name] = filesystem
                    self._sizes[name] = int(volume.size)
        if not self._filesystems:
            raise FileSystemError(f"{label} holds no file system that can be read")

    @property
    def volumes(self) -> list[FileInfo]:
        """Each volume with a file system, as an entry of ``/``."""
        return [self.stat(f"/{name}") for name in self._filesystems]

    def stat(self, path: str) -> FileInfo:
        """The entry at ``path`` (a symlink itself, not its target).

        Raises:
            FileSystemError: no such path.
        """
        volume, inner = self._split(path)
        if volume is None:
            return FileInfo("/", "", "dir", 0, ROOT_MODE, 0, 0, 0, 0)
        with _translated(f"reading {path} on {self.label}"):
            if inner == "/":
                root = self._filesystems[volume].get("/").lstat()
                return FileInfo(
                    f"/{volume}",
                    volume,
                    "dir",
                    self._sizes[volume],
                    root.st_mode,
                    root.st_uid,
                    root.st_gid,
                    root.st_mtime_ns,
                    root.st_atime_ns,
                    filesystem=str(self._filesystems[volume].__type__),
                )
            return _info(self._entry(volume, inner), _join(volume, inner))

    def list(self, path: str) -> list[FileInfo]:
        """The entries of the directory ``path``, by name.

        Raises:
            FileSystemError: no such directory.
        """
        volume, inner = self._split(path)
        if volume is None:
            return self.volumes
        with _translated(f"listing {path} on {self.label}"):
            entry = self._entry(volume, inner)
            if not entry.is_dir():
                raise FileSystemError(f"{path} on {self.label} is not a directory")
            return sorted(
                (_info(child.get(), _join(volume, inner, child.name)) for child in entry.scandir()),
                key=lambda info: info.name,
            )

    def walk(self, path: str) -> Iterator[FileInfo]:
        """``path`` and, for a directory, everything under it, parents first."""
        info = self.stat(path)
        yield info
        if info.kind == "dir":
            for child in self.list(path):
                yield from self.walk(child.path)

    def open(self, path: str) -> _TranslatedFile:
        """The regular file ``path``, for reading.

        Raises:
            FileSystemError: no such file, or not a regular file.
        """
        volume, inner = self._split(path)
        with _translated(f"opening {path} on {self.label}"):
            if volume is None or inner == "/":
                raise FileSystemError(f"{path} on {self.label} is not a regular file")
            entry = self._entry(volume, inner)
            if not stat.S_ISREG(entry.lstat().st_mode):
                raise FileSystemError(f"{path} on {self.label} is not a regular file")
            return _TranslatedFile(entry.open(), f"reading {path} on {self.label}")

    def _split(self, path: str) -> tuple[str | None, str]:
        parts = [part for part in path.split("/") if part]
        if not parts:
            return None, "/"
        if parts[0] not in self._filesystems:
            raise FileSystemError(
                f"{self.label} has no volume {parts[0]!r} (it has: "
                f"{', '.join(self._filesystems)}); a path starts with its volume, as in "
                f"/{next(iter(self._filesystems))}/etc"
            )
        if any(part in (".", "..") for part in parts):
            raise FileSystemError(f"{path}: a path may not contain . or ..")
        return parts[0], "/" + "/".join(parts[1:])

    def _entry(self, volume: str, inner: str) -> Any:
        filesystem = self._filesystems[volume]
        try:
            return filesystem.get(inner)
        except BlockferryError:
            raise
        except Exception as exc:
            raise FileSystemError(f"no {_join(volume, inner)} on {self.label}") from exc


@contextlib.contextmanager
def opened_disk(
    repo: Repository, rp_id: str, disk: str | None, *, pin: bool = True
) -> Iterator[DiskFiles]:
    """The file systems of ``disk`` (None: the only one) of restore point ``rp_id``,
    read in place, the restore point pinned meanwhile (unless ``pin`` is off: a
    repository that must not be written).

    Raises:
        RestorePointNotFound, ConfigError: no such restore point or disk.
        FileSystemError: no file system that can be read is on the disk.
    """
    with contextlib.ExitStack() as stack:
        if pin:
            stack.enter_context(repo.pin(rp_id, "file restore"))
        point = repo.restore_point(rp_id)
        name = point.choose_disk(disk)
        reader = stack.enter_context(DiskReader(repo, point, name))
        disk_file = io.BufferedReader(DiskFile(reader), buffer_size=64 * 1024)
        yield DiskFiles(disk_file, f"disk {name} of restore point {rp_id}")


def _volumes(disk: BinaryIO) -> Iterator[tuple[str, Any]]:
    """(name, volume) of every volume on ``disk`` that may hold a file system: partitions,
    logical volumes, or the whole disk when it has no partition table."""
    from dissect.target import volume as volumes

    disk.seek(0, 2)
    size = disk.tell()
    whole = volumes.Volume(disk, 1, 0, size, None, "disk", disk=disk)
    if volumes.is_lvm_volume(disk):
        candidates = [whole]
    else:
        try:
            candidates = list(volumes.open(disk).volumes)
        except BlockferryError:
            raise
        except Exception:
            candidates = []
        if not candidates:
            yield "disk", whole
            return
    physical = [vol for vol in candidates if volumes.is_lvm_volume(vol)]
    for vol in candidates:
        if vol not in physical and vol.offset:
            yield f"p{vol.number}", vol
    for group in volumes.open_lvm(physical):
        for lv in group.volumes:
            yield str(lv.name).replace("/", "-"), lv


def _open_filesystem(volume: Any, label: str) -> Any:
    from dissect.target import filesystem

    try:
        return filesystem.open(volume)
    except BlockferryError:
        raise
    except Exception as exc:
        log.info("%s: no file system found (%s)", label, exc)
        return None


def _info(entry: Any, path: str) -> FileInfo:
    st = entry.lstat()
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        kind = "dir"
    elif stat.S_ISREG(mode):
        kind = "file"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
    else:
        kind = "other"
    return FileInfo(
        path=path,
        name=path.rsplit("/", 1)[-1],
        kind=kind,
        size=int(st.st_size),
        mode=mode,
        uid=int(st.st_uid or 0),
        gid=int(st.st_gid or 0),
        mtime_ns=int(st.st_mtime_ns or 0),
        atime_ns=int(st.st_atime_ns or 0),
        target=str(entry.readlink()) if kind == "symlink" else None,
    )


def _join(volume: str, inner: str, name: str = "") -> str:
    path = f"/{volume}{inner.rstrip('/')}"
    return f"{path}/{name}" if name else path


class _translated:
    """Raise a repository error found under a dissect error as itself, and any other
    dissect error as a FileSystemError saying what was being done."""

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, BlockferryError):
                if cause is exc:
                    return
                raise cause
            cause = cause.__cause__ or cause.__context__
        raise FileSystemError(f"{self.doing}: {exc}") from exc


class _TranslatedFile:
    """A file of a file system whose reads raise blockferry's errors."""

    def __init__(self, file: BinaryIO, doing: str) -> None:
        self._file = file
        self._doing = doing

    def read(self, size: int = -1) -> bytes:
        with _translated(self._doing):
            return bytes(self._file.read(size))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._file.seek(offset, whence))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> _TranslatedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
