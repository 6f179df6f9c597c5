"""Reading a disk to back up: a raw image file, a block device, or an NBD export."""

from __future__ import annotations

import asyncio
import os
import stat
from concurrent.futures import Executor
from pathlib import Path

from blockferry.core.block_set import BlockSet
from blockferry.core.blocks import block_count
from blockferry.core.errors import SourceError
from blockferry.source_mover.nbd import NbdDisk
from blockferry.source_mover.qcow2 import Qcow2Export
from blockferry.sparse import data_ranges


class FileSource:
    """A raw image file or block device opened read-only; ``read_block`` is safe to call
    from several threads."""

    def __init__(self, path: Path, block_size: int) -> None:
        self.path = path
        self.block_size = block_size
        try:
            # O_NONBLOCK: opening a FIFO (or a character device) must not wait for a
            # writer forever; it is refused below, and cleared for what is read.
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SourceError(f"opening source {path}: {exc.strerror or exc}") from exc
        try:
            mode = os.fstat(self._fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise SourceError(f"opening source {path}: not a regular file or block device")
            os.set_blocking(self._fd, True)
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
        except BaseException:
            os.close(self._fd)
            raise
        self.blocks = block_count(self.size, block_size)

    def read_block(self, index: int) -> bytes:
        """The bytes of block ``index`` (the last block may be short)."""
        offset = index * self.block_size
        length = min(self.block_size, self.size - offset)
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise SourceError(
                f"reading block {index} of {self.path} at offset {offset}: {exc.strerror or exc}"
            ) from exc
        if len(data) != length:
            raise SourceError(
                f"reading block {index} of {self.path}: got {len(data)} of {length} bytes"
                " (did the source shrink?)"
            )
        return data

    async def zero_blocks(self) -> BlockSet:
        """Blocks lying wholly in holes of a sparse file (SEEK_DATA/SEEK_HOLE): they read
        as zeros, so they need no reading. Empty where the file system cannot tell."""
        zero = BlockSet(self.blocks)
        hole = 0  # where the hole before the next data range begins
        try:
            for start, end in data_ranges(self._fd, self.size):
                zero.add_range(-(-hole // self.block_size), start // self.block_size)
                hole = end
        except OSError:  # no hole reporting here: read everything
            return BlockSet(self.blocks)
        zero.add_range(-(-hole // self.block_size), self.blocks)
        return zero

    async def close(self) -> None:
        os.close(self._fd)


class NbdSource:
    """A disk exported over NBD (a qcow2 image or a live QEMU disk through qemu-nbd);
    ``read_block`` is a coroutine, callable from several tasks at once.

    Args:
        export: the private qemu-nbd serving a qcow2 image, stopped on close.
    """

    def __init__(self, disk: NbdDisk, block_size: int, export: Qcow2Export | None = None) -> None:
        self.path = str(export.image if export else disk.uri)
        self.block_size = block_size
        self.size = disk.size
        self.blocks = block_count(self.size, block_size)
        self.bitmap = disk.bitmap
        """The dirty bitmap the export was opened with, if any."""
        self._disk = disk
        self._export = export

    @classmethod
    async def open(cls, uri: str, block_size: int, bitmap: str | None) -> NbdSource:
        return cls(await NbdDisk.open(uri, bitmap), block_size)

    @classmethod
    async def export(cls, image: Path, block_size: int, bitmap: str | None) -> NbdSource:
        """Export a qcow2 image with a private qemu-nbd and open it."""
        export = Qcow2Export(image, bitmap)
        uri = await export.start()
        try:
            return cls(await NbdDisk.open(uri, bitmap), block_size, export)
        except BaseException:
            await export.stop()
            raise

    async def read_block(self, index: int) -> bytes:
        offset = index * self.block_size
        return await self._disk.read(offset, min(self.block_size, self.size - offset))

    async def zero_blocks(self) -> BlockSet:
        """Blocks the export says read as zeros (base:allocation): they need no reading."""
        zero = BlockSet(self.blocks)
        for extent in await self._disk.allocation(0, self.size):
            if extent.zero:
                first = -(-extent.offset // self.block_size)
                end = extent.end // self.block_size if extent.end < self.size else self.blocks
                zero.add_range(first, end)
        return zero

    async def dirty_blocks(self) -> BlockSet:
        """Blocks the dirty bitmap marks as written since it was added."""
        dirty = BlockSet(self.blocks)
        for extent in await self._disk.dirty(0, self.size):
            if extent.dirty:
                dirty.add_range(
                    extent.offset // self.block_size, (extent.end - 1) // self.block_size + 1
                )
        return dirty

    async def close(self) -> None:
        try:
            await self._disk.close()
        finally:
            if self._export is not None:
                await self._export.stop()


def is_nbd_uri(source: str) -> bool:
    return source.startswith(("nbd://", "nbd+unix://"))


DiskSource = FileSource | NbdSource


async def open_source(
    source: str, block_size: int, pool: Executor, bitmap: str | None = None
) -> DiskSource:
    """Open a path (in the pool: opening may block) or an NBD URI."""
    if is_nbd_uri(source):
        return await NbdSource.open(source, block_size, bitmap)
    if bitmap:
        raise SourceError(f"opening source {source}: dirty bitmaps need an NBD source")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, FileSource, Path(source), block_size)
