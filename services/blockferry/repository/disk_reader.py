"""Random access to one disk of a restore point, without restoring it.

:class:`DiskReader` answers any byte range of the disk by reading only the chunks that
range touches, each verified (checksum and keyed digest) as a restore verifies it. Zero
blocks are never read: they have no chunk. Decoded blocks are kept in a bounded cache
(least recently used first out), and a run of sequential reads makes the reader fetch
the blocks that follow in the background (read-ahead), so a client copying the disk
front to back waits on storage as little as a full restore does.

The reader takes no repository lock: an export may run for days, and GC must go on
meanwhile. The restore point is kept by a pin instead (see :meth:`Repository.pin`), and
a chunk that GC moved to a new pack since the pack index was loaded is found again
there (:meth:`Repository.read_block` relocates it).

:class:`DiskFile` is the same disk as a read-only, seekable binary file, for the file
system parsers of file-level restore.
"""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.core.errors import CorruptionError
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.repository import Repository
from blockferry.repository.restore_point import RestorePoint

CACHE_BYTES = 64 * 1024 * 1024
"""Decoded blocks kept by default (16 blocks of 4 MiB)."""
READ_AHEAD_BLOCKS = 4
"""Blocks fetched ahead of a sequential reader by default."""
READ_AHEAD_THREADS = 2


@dataclass(frozen=True)
class Extent:
    """A run of the disk: ``length`` bytes from ``offset``, all zero or not."""

    offset: int
    length: int
    zero: bool


class DiskReader:
    """Any byte range of ``disk`` in restore point ``point``; see the module's docstring.

    Thread-safe: many callers may read at once (an NBD server's connections).

    Args:
        cache_bytes: decoded blocks kept at most (at least two blocks are kept).
        read_ahead: blocks fetched ahead of a sequential reader (0: none).
    """

    def __init__(
        self,
        repo: Repository,
        point: RestorePoint,
        disk: str,
        *,
        cache_bytes: int = CACHE_BYTES,
        read_ahead: int = READ_AHEAD_BLOCKS,
    ) -> None:
        self.repo = repo
        self.point = point
        self.disk = disk
        self.index: FixedIndex = repo.read_fixed_index(point, disk)
        self.size = self.index.disk_size
        self.block_size = self.index.block_size
        self._cache_blocks = max(2, cache_bytes // self.block_size)
        self._read_ahead = read_ahead
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._pending: dict[int, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._next_sequential = -1
        self._pool = (
            ThreadPoolExecutor(READ_AHEAD_THREADS, thread_name_prefix="read-ahead")
            if read_ahead
            else None
        )
        self.blocks_fetched = 0
        """Blocks read from storage so far (for tests and statistics)."""

    def close(self) -> None:
        """Stop the read-ahead threads (the repository stays open)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, fewer at the end of the disk.

        Raises:
            CorruptionError: a chunk the range needs is missing or damaged; the message
                names the block, the disk and the restore point.
            ValueError: a negative offset or length.
        """
        if offset < 0 or length < 0:
            raise ValueError(f"reading {length} bytes at offset {offset}")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        parts = []
        for index in range(first, last + 1):
            data = self.block(index)
            start = index * self.block_size
            parts.append(data[max(offset - start, 0) : end - start])
        self._after_read(last)
        return b"".join(parts)

    def block(self, index: int) -> bytes:
        """The plaintext of block ``index`` (zero blocks too), from the cache if there."""
        block_digest = self.index.digests[index]
        if block_digest == ZERO_DIGEST:
            return bytes(self.index.block_length(index))
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
            pending = self._pending.get(index)
        data = pending.result() if pending is not None else self._fetch(index)
        self._keep(index, data)
        return data

    def extents(self, offset: int, length: int) -> list[Extent]:
        """The zero and data runs of ``[offset, offset + length)`` (clipped to the
        disk), adjacent runs of one kind merged; reads no chunk."""
        end = min(offset + length, self.size)
        runs: list[Extent] = []
        position = offset
        while position < end:
            index = position // self.block_size
            run_end = min((index + 1) * self.block_size, end)
            zero = self.index.digests[index] == ZERO_DIGEST
            if runs and runs[-1].zero == zero:
                last = runs.pop()
                runs.append(Extent(last.offset, run_end - last.offset, zero))
            else:
                runs.append(Extent(position, run_end - position, zero))
            position = run_end
        return runs

    def _fetch(self, index: int) -> bytes:
        data = self.repo.read_block(self.index.digests[index])
        if len(data) != self.index.block_length(index):
            raise CorruptionError(
                f"reading block {index} of disk {self.disk} of restore point "
                f"{self.point.id}: its chunk has {len(data)} bytes, the block "
                f"{self.index.block_length(index)}"
            )
        with self._lock:
            self.blocks_fetched += 1
        return data

    def _keep(self, index: int, data: bytes) -> None:
        with self._lock:
            self._pending.pop(index, None)
            self._cache[index] = data
            self._cache.move_to_end(index)
            while len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)

    def _after_read(self, last: int) -> None:
        """Start fetching the blocks after ``last`` when the reads are sequential."""
        with self._lock:
            sequential = self._next_sequential in (last, last + 1)
            self._next_sequential = last + 1
            if self._pool is None or not sequential:
                return
            ahead = range(last + 1, min(last + 1 + self._read_ahead, self.index.block_count))
            for index in ahead:
                wanted = index not in self._cache and index not in self._pending
                if wanted and self.index.digests[index] != ZERO_DIGEST:
                    future = self._pool.submit(self._fetch, index)
                    future.add_done_callback(functools.partial(self._prefetched, index))
                    self._pending[index] = future

    def _prefetched(self, index: int, done: Future[bytes]) -> None:
        if done.cancelled() or done.exception() is not None:
            # a damaged chunk read ahead is reported when (and if) its block is read
            with self._lock:
                self._pending.pop(index, None)
            return
        self._keep(index, done.result())


class DiskFile(io.RawIOBase):
    """A :class:`DiskReader` as a read-only, seekable binary file."""

    def __init__(self, reader: DiskReader) -> None:
        super().__init__()
        self.reader = reader
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.reader.size}
        position = base[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.reader.read(self._position, len(buffer))
        memoryview(buffer)[: len(data)] = data
        self._position += len(data)
        return len(data)
