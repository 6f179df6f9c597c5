"""Open pack file descriptors shared by concurrent reads.

Reads use ``os.pread`` on a shared descriptor, so many threads can read one
pack at once. At most ``limit`` descriptors stay open, least recently used
closed first, and never while a read is using one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from blockferry.core.errors import CorruptionError
from blockferry.repository.files import storage_error
from blockferry.repository.layout import Layout


class PackFiles:
    """Open pack file descriptors, shared by reads, least recently used closed first."""

    def __init__(self, layout: Layout, limit: int = 64) -> None:
        self._layout = layout
        self._limit = limit
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._users: dict[int, int] = {}
        self._retired: set[int] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, pack_id: str) -> Iterator[int]:
        """A descriptor of the sealed pack ``pack_id`` for the ``with`` block."""
        fd = self._acquire(pack_id)
        try:
            yield fd
        finally:
            self._release(fd)

    def close(self) -> None:
        """Close every descriptor (those in use once their read ends)."""
        with self._lock:
            for fd in self._fds.values():
                self._retire(fd)
            self._fds.clear()

    def _acquire(self, pack_id: str) -> int:
        with self._lock:
            fd = self._fds.get(pack_id)
            if fd is not None:
                self._fds.move_to_end(pack_id)
            else:
                path = self._layout.pack(pack_id)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError as exc:
                    raise CorruptionError(f"reading pack {path}: file is missing") from exc
                except OSError as exc:
                    raise storage_error(f"opening pack {path}", exc) from exc
                self._fds[pack_id] = fd
                while len(self._fds) > self._limit:
                    _, old = self._fds.popitem(last=False)
                    self._retire(old)
            self._users[fd] = self._users.get(fd, 0) + 1
            return fd

    def _release(self, fd: int) -> None:
        with self._lock:
            self._users[fd] -= 1
            if self._users[fd] == 0:
                del self._users[fd]
                if fd in self._retired:
                    self._retired.discard(fd)
                    os.close(fd)

    def _retire(self, fd: int) -> None:
        if fd in self._users:
            self._retired.add(fd)
        else:
            os.close(fd)
