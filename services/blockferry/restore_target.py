"""Writing a restored disk to its destination: a regular file or a block device.

Used by the offline restore (``blockferry repo restore``) and by the source
mover when it receives restore data, so it knows nothing of repositories.

* A regular file is written into a new temporary file next to the
  destination, sized to the disk with ``ftruncate`` so zero blocks stay holes,
  fsynced and renamed into place only by :meth:`DiskWriter.commit`. Until then
  an existing destination is untouched, and :meth:`DiskWriter.abort` (or any
  error) removes the temporary file. What a killed restore left is removed by the
  next restore to the same destination.
* A block device holds old data, so every block is written, zeros included,
  never skipped. The device is opened with ``O_EXCL`` (the kernel refuses a
  mounted device). An aborted restore leaves the device partially written:
  there is no way to roll a device back.

An existing destination, file or device, is refused unless ``force``. With
``force``, a destination that is a symlink to a regular file is itself replaced
by the restored file (the link's target is not written); a symlink to a block
device (``/dev/disk/by-id/...``) writes the device.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import secrets
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from blockferry.core.blocks import block_count, is_zero
from blockferry.core.errors import DestinationError

log = logging.getLogger(__name__)

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
RESTORED_FILE_MODE = 0o600


def is_block_device(path: Path) -> bool:
    """Whether ``path`` (following symlinks) is a block device."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` is one of ``roots`` or below one (both taken as they are)."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_named_within(destination: str, roots: Sequence[Path]) -> None:
    """Refuse a destination that is not an absolute path under a restore root, by its
    name alone (where the orchestrator checks: it does not see the mover's files).

    Raises:
        DestinationError: it is relative, or names a place outside every root.
    """
    path = Path(os.path.normpath(destination))
    if not path.is_absolute() or not within(path, roots):
        raise DestinationError(
            f"restoring to {destination}: name an absolute path under a restore root"
            f" ({', '.join(map(str, roots))}; the restore_roots setting names them)"
        )


def check_within_roots(dest: Path, roots: Sequence[Path]) -> None:
    """Refuse a destination outside every restore root. Symlinks are followed: a link to
    a block device must lead into a root; a file is written in its directory's real place.

    Raises:
        DestinationError: ``dest`` is not under a restore root.
    """
    real_roots = [root.resolve() for root in roots]
    target = dest.resolve() if is_block_device(dest) else dest.parent.resolve() / dest.name
    if not within(target, real_roots):
        raise DestinationError(
            f"restoring to {dest}: it leads to {target}, not under a restore root"
            f" ({', '.join(map(str, roots))}; the restore_roots setting names them)"
        )


def check_destination(dest: Path, *, force: bool) -> os.stat_result | None:
    """Refuse a destination a restore may not write, before anything is read for it;
    return what exists there now (None: nothing).

    Raises:
        DestinationError: ``dest`` exists and ``force`` is false, is neither a regular
            file nor a block device, or its directory does not exist.
    """
    try:
        existing: os.stat_result | None = os.stat(dest)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise DestinationError(f"restoring to {dest}: {exc}") from exc
    if existing is not None and stat.S_ISBLK(existing.st_mode):
        if not force:
            raise DestinationError(
                f"restoring to {dest}: it is a block device holding data; "
                "use --force to overwrite it"
            )
        return existing
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise DestinationError(
            f"restoring to {dest}: it exists and is neither a regular file nor a block device"
        )
    if existing is not None and not force:
        raise DestinationError(f"restoring to {dest}: it exists; use --force to overwrite it")
    if not dest.parent.is_dir():
        raise DestinationError(f"restoring to {dest}: directory {dest.parent} does not exist")
    return existing


class DiskWriter:
    """Writes the blocks of one disk, in any order and from several threads at once
    (each block from one), then commits or aborts.

    Every block must be given once, with :meth:`write_block` or
    :meth:`write_zeros`, before :meth:`commit`. Use as a context manager: leaving
    the ``with`` block without a commit aborts.
    """

    def __init__(
        self,
        *,
        dest: Path,
        disk_size: int,
        block_size: int,
        fd: int,
        temp: Path | None,
        replaces: os.stat_result | None,
    ) -> None:
        self.dest = dest
        self.disk_size = disk_size
        self.block_size = block_size
        self.bytes_written = 0
        self._fd: int | None = fd
        self._temp = temp
        self._replaces = replaces
        self._count = block_count(disk_size, block_size)
        self._written = bytearray(self._count)
        self._zeros = b""
        self._committed = False
        self._counting = threading.Lock()

    @classmethod
    def open(cls, dest: Path, disk_size: int, *, block_size: int, force: bool) -> DiskWriter:
        """Prepare to restore a disk of ``disk_size`` bytes to ``dest``.

        Raises:
            DestinationError: ``dest`` exists and ``force`` is false, is neither a
                regular file nor a block device, is smaller than the disk (a
                device), or cannot be opened.
        """
        dest = Path(dest)
        if disk_size < 0 or block_size <= 0:
            raise ValueError(f"invalid disk size {disk_size} or block size {block_size}")
        existing = check_destination(dest, force=force)
        if existing is not None and stat.S_ISBLK(existing.st_mode):
            return cls._open_device(dest, disk_size, block_size)
        _remove_earlier_attempts(dest)
        temp = dest.with_name(f".{dest.name}.restore-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, RESTORED_FILE_MODE
            )
        except OSError as exc:
            raise _destination_error(f"creating {temp}", exc) from exc
        try:
            os.ftruncate(fd, disk_size)
        except OSError as exc:
            os.close(fd)
            _unlink_quietly(temp)
            raise _destination_error(f"sizing {temp}", exc) from exc
        return cls(
            dest=dest,
            disk_size=disk_size,
            block_size=block_size,
            fd=fd,
            temp=temp,
            replaces=existing,
        )

    @classmethod
    def _open_device(cls, dest: Path, disk_size: int, block_size: int) -> DiskWriter:
        try:
            # O_EXCL on a block device: the kernel refuses it while mounted or in use.
            fd = os.open(dest, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as exc:
            raise DestinationError(f"opening block device {dest}: {exc}") from exc
        try:
            device_size = os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            os.close(fd)
            raise DestinationError(f"sizing block device {dest}: {exc}") from exc
        if device_size < disk_size:
            os.close(fd)
            raise DestinationError(
                f"restoring to {dest}: the device has {device_size} bytes, "
                f"the disk needs {disk_size}"
            )
        return cls(
            dest=dest, disk_size=disk_size, block_size=block_size, fd=fd, temp=None, replaces=None
        )

    @property
    def is_device(self) -> bool:
        """Whether the destination is a block device."""
        return self._temp is None

    @property
    def block_count(self) -> int:
        """Blocks in the disk."""
        return self._count

    def block_length(self, index: int) -> int:
        """Bytes in block ``index`` (the last may be short)."""
        return min(self.block_size, self.disk_size - index * self.block_size)

    def write_block(self, index: int, data: bytes) -> None:
        """Write block ``index``; all-zero data is left as a hole in a file.

        Raises:
            DestinationError: wrong index or length, or the write failed.
        """
        fd = self._require_open()
        if not 0 <= index < self._count:
            raise DestinationError(f"restoring to {self.dest}: block {index} out of range")
        if len(data) != self.block_length(index):
            raise DestinationError(
                f"restoring to {self.dest}: block {index} has {len(data)} bytes, "
                f"expected {self.block_length(index)}"
            )
        if self.is_device or not is_zero(data):
            self._pwrite(fd, data, index * self.block_size)
            with self._counting:
                self.bytes_written += len(data)
        self._written[index] = 1

    def write_zeros(self, index: int) -> None:
        """Block ``index`` is a zero block: a hole in a file, zeros written on a device."""
        fd = self._require_open()
        if not 0 <= index < self._count:
            raise DestinationError(f"restoring to {self.dest}: block {index} out of range")
        if self.is_device:
            length = self.block_length(index)
            if len(self._zeros) < length:
                self._zeros = bytes(self.block_size)
            self._pwrite(fd, memoryview(self._zeros)[:length], index * self.block_size)
            with self._counting:
                self.bytes_written += length
        self._written[index] = 1

    def commit(self) -> None:
        """fsync and, for a file, rename into place; raises DestinationError if incomplete."""
        fd = self._require_open()
        missing = self._count - sum(self._written)
        try:
            if missing:
                raise DestinationError(
                    f"restoring to {self.dest}: {missing} of {self._count} blocks never written"
                )
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _destination_error(f"syncing {self.dest}", exc) from exc
            self._close()
            if self._temp is not None:
                self._publish(self._temp)
        except BaseException:
            self.abort()
            raise
        self._committed = True

    def abort(self) -> None:
        """Close and remove the temporary file (a device is left as written). Idempotent."""
        self._close()
        if self._temp is not None and not self._committed:
            _unlink_quietly(self._temp)

    def __enter__(self) -> DiskWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.abort()

    def _publish(self, temp: Path) -> None:
        try:
            if self._replaces is not None:
                os.chmod(temp, stat.S_IMODE(self._replaces.st_mode))
                os.replace(temp, self.dest)
            else:
                _publish_new(temp, self.dest)
            _fsync_dir(self.dest.parent)
        except FileExistsError as exc:
            raise DestinationError(
                f"restoring to {self.dest}: it appeared during the restore; "
                "use --force to overwrite it"
            ) from exc
        except OSError as exc:
            raise _destination_error(f"renaming {temp} to {self.dest}", exc) from exc

    def _pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise _destination_error(f"writing {self.dest} at offset {offset}", exc) from exc

    def _require_open(self) -> int:
        if self._fd is None:
            raise DestinationError(f"restoring to {self.dest}: writer is committed or aborted")
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _publish_new(temp: Path, dest: Path) -> None:
    """Rename ``temp`` to ``dest`` unless ``dest`` appeared meanwhile."""
    try:
        # link() refuses to replace an existing file, atomically.
        os.link(temp, dest)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # No hard links on this file system: check, then rename (a small window).
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "file exists", str(dest)) from exc
        os.rename(temp, dest)
        return
    os.unlink(temp)


def _destination_error(action: str, exc: OSError) -> DestinationError:
    if exc.errno in _NO_SPACE:
        return DestinationError(f"{action}: no space left on the destination ({exc.strerror})")
    return DestinationError(f"{action}: {exc}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_earlier_attempts(dest: Path) -> None:
    """Remove the temporary files that killed restores to ``dest`` left: this attempt
    writes the whole disk again (an older attempt still writing fails to publish)."""
    for temp in dest.parent.glob(f".{glob.escape(dest.name)}.restore-*.tmp"):
        log.warning("removing %s, left by an earlier restore to %s", temp, dest)
        _unlink_quietly(temp)
