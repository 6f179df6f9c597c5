"""Snapshot providers: a point-in-time copy of a disk for the movers to read.

A backup reads a disk for minutes or hours; reading a disk that the VM writes meanwhile
gives an image that never existed. So each disk is first snapshotted, the movers read
the snapshot, and the snapshot is deleted at the end of the session, whatever the
outcome. Deleting is idempotent because it is retried after a crash.

The functions take plain values (not the job model): the guest proxy receives them as
JSON in its "snapshot" and "delete-snapshot" commands.

- ``none``: the source is read as it is (only right for a disk nobody writes).
- ``file-copy``: a reflink (copy-on-write) copy of the image file next to it, which is
  instantaneous and atomic; where the file system cannot reflink, a plain sparse copy,
  which is neither (the snapshot carries a warning).
- ``command``: site commands make and delete the snapshot (LVM, ZFS, Ceph, ...).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import stat
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

from blockferry.core.errors import ConfigError, GuestError
from blockferry.guest_proxy.commands import run_local
from blockferry.repository.ids import validate_name
from blockferry.sparse import data_ranges

Kind = Literal["none", "reflink", "copy", "command"]

FICLONE = 0x40049409
"""ioctl that makes the destination share the source's extents (Btrfs, XFS, bcachefs)."""

NO_REFLINK = frozenset({errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY})
"""FICLONE errors meaning "this file system cannot reflink": fall back to a plain copy."""

COPY_CHUNK = 64 * 1024 * 1024
"""Bytes per copy_file_range call: how often a plain copy checks for cancellation."""

PLAIN_COPY_WARNING = (
    "the snapshot is a plain copy (the file system cannot reflink), which is not atomic:"
    " the image may change while it is copied unless the guest is frozen or the VM stopped"
)


@dataclass(frozen=True)
class Snapshot:
    """One made snapshot, as the guest proxy reports it."""

    disk: str
    source: str
    path: str
    """What the movers read."""
    kind: Kind
    warnings: tuple[str, ...] = ()


async def create_snapshot(
    provider: str,
    disk: str,
    source: str,
    session_id: str,
    *,
    create: str | None = None,
    timeout_s: float = 300.0,
    freeze_limit_s: float | None = None,
) -> Snapshot:
    """Make the snapshot of one disk. ``timeout_s`` limits the ``create`` command;
    ``freeze_limit_s`` (how long the guest stays frozen) only adds a warning when a
    plain copy takes longer, since the copy then saw writes."""
    validate_name("session", session_id)
    if provider == "none":
        return Snapshot(disk, source, source, "none")
    if provider == "file-copy":
        return await _copy_image(disk, source, session_id, freeze_limit_s)
    if provider == "command":
        if not create:
            raise ConfigError(f"making a snapshot of disk {disk}: no create command given")
        return await _run_create(create, disk, source, session_id, timeout_s)
    raise ConfigError(f"making a snapshot of disk {disk}: unknown provider {provider!r}")


async def delete_snapshot(
    disk: str,
    source: str,
    path: str,
    *,
    provider: str,
    session_id: str,
    delete: str | None = None,
    timeout_s: float = 300.0,
) -> None:
    """Delete a snapshot made by :func:`create_snapshot`; deleting one that is already
    gone (or was never completed) succeeds."""
    validate_name("session", session_id)
    if provider == "none":
        return
    if provider == "file-copy":
        # The path is derived, not taken from the request: this can only ever remove our
        # own copy, and it also works after a crash, before the path was reported.
        copy = copy_path(source, session_id)
        for name in (copy, partial_path(copy)):
            try:
                await asyncio.to_thread(_remove, name)
            except OSError as exc:
                raise GuestError(
                    f"deleting the snapshot copy of disk {disk} ({name}): {exc.strerror or exc}"
                ) from exc
        return
    if provider == "command":
        if not delete:
            raise ConfigError(f"deleting the snapshot of disk {disk}: no delete command")
        env = _command_env(disk, source, session_id)
        result = await run_local(delete, timeout_s, {**env, "BLOCKFERRY_SNAPSHOT": path})
        if not result.ok:
            raise GuestError(
                f"deleting the snapshot {path} of disk {disk}"
                f" with the delete command: {result.describe()}"
            )
        return
    raise ConfigError(f"deleting the snapshot of disk {disk}: unknown provider {provider!r}")


def copy_path(source: str, session_id: str) -> str:
    """Where file-copy puts the snapshot: a hidden sibling of the image (of the file a
    symbolic link names), on the same file system, which a reflink needs."""
    directory, name = os.path.split(os.path.realpath(source))
    return os.path.join(directory, f".{name}.blockferry-snapshot-{session_id}")


def partial_path(path: str) -> str:
    """The name a copy is written under until it is complete."""
    return f"{path}.partial"


async def _run_create(
    create: str, disk: str, source: str, session_id: str, timeout_s: float
) -> Snapshot:
    result = await run_local(create, timeout_s, _command_env(disk, source, session_id))
    action = f"making a snapshot of disk {disk} ({source}) with the create command"
    if not result.ok:
        raise GuestError(f"{action}: {result.describe()}")
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        raise GuestError(f"{action}: it printed no snapshot path ({result.describe()})")
    return Snapshot(disk, source, lines[-1], "command")


def _command_env(disk: str, source: str, session_id: str) -> dict[str, str]:
    return {
        "BLOCKFERRY_SOURCE": source,
        "BLOCKFERRY_DISK": disk,
        "BLOCKFERRY_SESSION": session_id,
    }


async def _copy_image(
    disk: str, source: str, session_id: str, freeze_limit_s: float | None
) -> Snapshot:
    action = f"making a snapshot copy of disk {disk} ({source})"
    try:
        mode = os.stat(source).st_mode
    except OSError as exc:
        raise GuestError(f"{action}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        # Checked before opening: opening a device or a FIFO can block or have effects.
        raise GuestError(
            f"{action}: not a regular file (file-copy copies image files;"
            " snapshot block devices with the command provider)"
        )
    path = copy_path(source, session_id)
    cancelled = threading.Event()
    started = time.monotonic()
    try:
        kind = await asyncio.to_thread(_copy_file, source, path, cancelled)
    except asyncio.CancelledError:
        cancelled.set()  # the thread stops at its next chunk and removes its partial copy
        raise
    except OSError as exc:
        raise GuestError(f"{action}: {exc.strerror or exc}") from exc
    seconds = time.monotonic() - started
    warnings: list[str] = []
    if kind == "copy":
        warnings.append(PLAIN_COPY_WARNING)
        if freeze_limit_s is not None and seconds > freeze_limit_s:
            warnings.append(
                f"the plain copy took {seconds:.1f} s, longer than the freeze limit"
                f" of {freeze_limit_s:g} s: the guest was not frozen for all of it"
            )
    return Snapshot(disk, source, path, kind, tuple(warnings))


def _copy_file(source: str, path: str, cancelled: threading.Event) -> Kind:
    """Copy ``source`` to ``path`` by reflink, else plainly; written under a temporary
    name and renamed when complete, so ``path`` is always a whole copy. A leftover of a
    retried session is replaced. Not synced: a snapshot never outlives a crash."""
    partial = partial_path(path)
    src = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(src)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(partial, flags, 0o600)
        try:
            try:
                os.fchmod(dst, stat.S_IMODE(info.st_mode))
                kind: Kind = "reflink" if _reflink(src, dst) else "copy"
                if kind == "copy":
                    _copy_sparse(src, dst, info.st_size, cancelled)
            finally:
                os.close(dst)
            os.replace(partial, path)
        except BaseException:
            _remove(partial)
            raise
    finally:
        os.close(src)
    return kind


def _reflink(src: int, dst: int) -> bool:
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError as exc:
        if exc.errno in NO_REFLINK:
            return False
        raise
    return True


def _copy_sparse(src: int, dst: int, size: int, cancelled: threading.Event) -> None:
    """Copy the data ranges (SEEK_DATA/SEEK_HOLE) of the first ``size`` bytes, leaving
    holes as holes, then set the size: images are mostly holes."""
    for start, end in data_ranges(src, size):
        offset = start
        while offset < end:
            if cancelled.is_set():
                raise OSError(errno.ECANCELED, "cancelled")
            copied = os.copy_file_range(src, dst, min(end - offset, COPY_CHUNK), offset, offset)
            if copied == 0:  # the source shrank while being copied
                break
            offset += copied
    os.ftruncate(dst, size)


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
