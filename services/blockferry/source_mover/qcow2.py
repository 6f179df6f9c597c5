"""qcow2 images: read as the guest sees the disk, their changes tracked by dirty bitmaps
kept in the image itself (Debian's qemu-utils: ``qemu-img`` and ``qemu-nbd``).

The image is exported read-only by a private ``qemu-nbd`` on a Unix socket. While it
runs, QEMU's image locking keeps any VM from opening the image for writing, so what is
read is one consistent state.

Before the disk is read, a persistent dirty bitmap named after the restore point being
made is added to the image: from then on it records every write, so the next backup
reads only the blocks it marks. The parent's bitmap is never removed by the backup that
reads it; a later backup removes it, once a newer restore point is its parent. So a
bitmap leaves the image only after the restore point that follows it was committed, and
a failed backup never loses track of a change. Only bitmaps this module named
(``blockferry.<job>.<restore point>``) are ever removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from blockferry.core.errors import SourceError
from blockferry.repository.ids import is_restore_point_id

log = logging.getLogger(__name__)

QCOW2_MAGIC = b"QFI\xfb"
BITMAP_PREFIX = "blockferry."
EXPORT_NAME = "disk"
START_TIMEOUT_S = 30.0


def is_qcow2(path: str) -> bool:
    """Whether ``path`` is a file or block device holding a qcow2 image (by its magic);
    what cannot be opened is not. Never waits for a FIFO's writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            return False
        return os.pread(fd, len(QCOW2_MAGIC), 0) == QCOW2_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def bitmap_name(job: str, restore_point: str) -> str:
    """The dirty bitmap that records the writes after ``restore_point`` of ``job``."""
    return f"{BITMAP_PREFIX}{job}.{restore_point}"


def _is_ours(name: str, job: str) -> bool:
    prefix = f"{BITMAP_PREFIX}{job}."
    return name.startswith(prefix) and is_restore_point_id(name[len(prefix) :])


@dataclass(frozen=True)
class Bitmap:
    name: str
    consistent: bool
    """False when QEMU stopped without saving it (flag ``in-use``): it cannot be trusted."""


@dataclass(frozen=True)
class Tracking:
    """What :func:`prepare_bitmaps` decided for one backup of an image."""

    parent_bitmap: str | None
    """The bitmap of the writes since the parent restore point, to read by; None: none."""
    warning: str = ""


async def _qemu(image: Path, *args: str) -> str:
    """Run a qemu-utils command on ``image``; raise SourceError with its message."""
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise SourceError(
            f"reading qcow2 image {image}: {args[0]} is not installed (Debian: qemu-utils)"
        ) from exc
    out, err = await process.communicate()
    if process.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
        if "lock" in message:
            message += " (is a VM running on it? read a running VM's disk through its NBD export)"
        raise SourceError(f"{args[0]} {args[1]} on {image}: {message}")
    return out.decode(errors="replace")


async def bitmaps(image: Path) -> list[Bitmap]:
    """The persistent dirty bitmaps stored in ``image``."""
    out = await _qemu(image, "qemu-img", "info", "--output=json", "-f", "qcow2", str(image))
    try:
        info = json.loads(out)
        found = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
        return [Bitmap(b["name"], "in-use" not in b.get("flags", [])) for b in found]
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise SourceError(f"qemu-img info on {image}: unexpected output: {exc}") from exc


async def prepare_bitmaps(
    image: Path, job: str, parent: str | None, restore_point: str
) -> Tracking:
    """Choose the bitmap to read by, remove this job's stale bitmaps and add the one for
    ``restore_point``; see the module's docstring."""
    present = {b.name: b for b in await bitmaps(image)}
    wanted = bitmap_name(job, parent) if parent else None
    found = present.get(wanted) if wanted else None
    tracking = Tracking(found.name if found is not None and found.consistent else None)
    if parent and tracking.parent_bitmap is None:
        why = (
            f"dirty bitmap {wanted} of {image} is inconsistent (QEMU stopped without saving it)"
            if found is not None
            else f"{image} has no dirty bitmap {wanted} of the writes since the parent"
        )
        tracking = Tracking(None, f"{why}; every block was read and compared instead")
    new = bitmap_name(job, restore_point)
    for name in present:
        if _is_ours(name, job) and name not in {tracking.parent_bitmap, new}:
            log.info("removing dirty bitmap %s of %s: a newer parent replaced it", name, image)
            await _qemu(image, "qemu-img", "bitmap", "--remove", str(image), name)
    if new not in present:
        await _qemu(image, "qemu-img", "bitmap", "--add", str(image), new)
    return tracking


class Qcow2Export:
    """``image`` exported read-only by a private qemu-nbd on a Unix socket.

    qemu-nbd serves one client and then exits, so it goes away with the reader even
    when the source mover is killed.
    """

    def __init__(self, image: Path, bitmap: str | None) -> None:
        self.image = image
        self.bitmap = bitmap
        self._dir: str | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Start qemu-nbd; return the NBD URI to read from."""
        self._dir = tempfile.mkdtemp(prefix="blockferry-nbd-")
        socket = Path(self._dir) / "nbd.sock"
        args = [
            "--read-only",
            "--format=qcow2",
            f"--socket={socket}",
            f"--export-name={EXPORT_NAME}",
        ]
        if self.bitmap:
            args.append(f"--bitmap={self.bitmap}")
        try:
            self._process = await asyncio.create_subprocess_exec(
                "qemu-nbd",
                *args,
                str(self.image),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            await self.stop()
            raise SourceError(
                f"exporting {self.image}: qemu-nbd is not installed (Debian: qemu-utils)"
            ) from exc
        try:
            await self._wait_for(socket)
        except BaseException:
            await self.stop()
            raise
        return f"nbd+unix:///{EXPORT_NAME}?socket={socket}"

    async def _wait_for(self, socket: Path) -> None:
        assert self._process is not None and self._process.stderr is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not await asyncio.to_thread(socket.exists):
            if self._process.returncode is not None:
                message = (await self._process.stderr.read()).decode(errors="replace").strip()
                raise SourceError(f"qemu-nbd could not export {self.image}: {message}")
            if loop.time() > deadline:
                raise SourceError(f"qemu-nbd did not export {self.image} in {START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
