"""Where a sparse file holds data: what the source mover need not read, and what a
snapshot copy need not copy."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator


def data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The byte ranges ``[start, end)`` of the first ``size`` bytes of the open file
    ``fd`` that hold data (``SEEK_DATA``/``SEEK_HOLE``); between them are holes, which
    read as zeros. Moves the file's offset. Raises OSError where the file system (or a
    block device) cannot tell, typically EINVAL."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end
