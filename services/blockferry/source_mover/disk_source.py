"""Reading a disk to back up: a raw image file or a block device."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from blockferry.core.blocks import block_count
from blockferry.core.errors import SourceError


class DiskSource:
    """A disk opened read-only; ``read_block`` is safe to call from several threads."""

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

    def close(self) -> None:
        os.close(self._fd)
