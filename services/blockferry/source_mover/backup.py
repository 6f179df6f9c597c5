"""One backup task: read a disk, drop zero blocks, digest, deduplicate, compress, send.

Blocks go through in windows of ``in_flight``: read, zero-tested and digested in
a thread pool (zstandard and blake3 release the GIL); the window's digests new
to the session are looked up in the dedupe index in one round; the unknown ones
are compressed in the pool and produced. A few windows are under way at once,
so reading, lookups, compressing and producing overlap, and the event loop stays
free for Kafka's heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from blockferry import changed_ranges
from blockferry.core import blocks
from blockferry.core.block_set import BlockSet
from blockferry.core.errors import BlockferryError, RecordError, SessionError, SourceError
from blockferry.core.restore_point_uri import is_restore_point_uri
from blockferry.mesh import Mesh
from blockferry.source_mover import changes, qcow2
from blockferry.source_mover.changes import ParentIndex
from blockferry.source_mover.disk_source import DiskSource, FileSource, NbdSource, open_source
from blockferry.source_mover.lookups import GlobalLookup
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.source_mover.restore_point_source import RestorePointSource
from blockferry.source_mover.settings import SourceMoverConfig
from blockferry.source_mover.throttle import Throttle
from blockferry.transport.codec import signed64
from blockferry.transport.commands import DISK_ANSWERS, DiskStored, MissingBlocks, ResumePoint
from blockferry.transport.mailbox import Mailbox, next_record
from blockferry.transport.records import (
    Chunk,
    DiskEnd,
    Extents,
    Reply,
    RepositoryInfo,
    ResumeQuery,
    Task,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_UNACKED_CHUNKS = 64
WINDOWS_IN_FLIGHT = 2
"""Windows under way at once: one is looked up while the other is read or sent."""


@dataclass
class PreparedBlock:
    """A block after the CPU work: its digest and, when it must be sent, its stored bytes."""

    index: int
    size: int
    digest: bytes
    unchanged: bool = False
    """Same as in the parent restore point: nothing to send, not even an extent."""
    deduplicated: str = ""
    """Why a non-zero block is not sent: stored by the parent, sent in this session
    already, or known to the repository's dedupe index (global)."""
    data: bytes | None = None
    """The plain bytes of a block still to be compressed and sent."""
    stored: bytes | None = None
    compressed: bool = False
    checksum: int = 0
    read: bool = True
    """False for a block the source said is zero without our reading it."""


@dataclass
class BackupCounters:
    blocks_total: int = 0
    blocks_done: int = 0
    blocks_read: int = 0
    blocks_zero: int = 0
    blocks_changed: int = 0
    """Blocks whose content differs from the parent's (every block read when full)."""
    blocks_deduplicated_parent: int = 0
    blocks_deduplicated_session: int = 0
    blocks_deduplicated_global: int = 0
    blocks_unchanged: int = 0
    blocks_skipped: int = 0
    blocks_hole: int = 0
    """Zero blocks known from the source's holes or zero extents, never read."""
    blocks_sent: int = 0
    blocks_resent: int = 0
    blocks_resumed: int = 0
    bytes_read: int = 0
    bytes_sent: int = 0
    bytes_sent_plain: int = 0

    def as_map(self) -> dict[str, int]:
        return dict(vars(self))


Source = DiskSource | RestorePointSource


class BackupRun:
    """Sends one disk of one session to a repository's target side.

    Args:
        sent: digests already sent in this session (shared by the session's disks
            on this mover), so a block is sent once per session.
        open_copy_source: opens the task's source when it is a restore point in another
            repository (a copy).
    """

    def __init__(
        self,
        mesh: Mesh,
        config: SourceMoverConfig,
        metrics: SourceMoverMetrics,
        pool: Executor,
        task: Task,
        repository: RepositoryInfo,
        dedupe_key: bytes,
        replies: Mailbox,
        lookup_replies: Mailbox,
        sent: set[bytes],
        open_copy_source: Callable[[], Awaitable[RestorePointSource]] | None = None,
    ) -> None:
        self._mesh = mesh
        self._open_copy_source = open_copy_source
        self._config = config
        self._metrics = metrics
        self._pool = pool
        self._task = task
        self._repo_name = task.repository
        self._key = dedupe_key
        self._block_size = repository.block_size
        self._level = blocks.parse_compression(task.compression).zstd_level
        self._replies = replies
        self._sent = sent
        self._lookup: GlobalLookup | None = None
        if config.global_dedupe:
            self._lookup = GlobalLookup(
                mesh,
                self._repo_name,
                repository.shard_count,
                lookup_replies,
                f"{self._extents_key}/lookups",
                config.lookup_timeout_s,
                config.lookup_retry_s,
                metrics,
            )
        self._unacked: deque[asyncio.Future[Any]] = deque()
        self._parent: ParentIndex | None = None
        self._to_read: BlockSet | None = None
        """Blocks a trusted changed-ranges map or dirty bitmap names; None: every block."""
        self.counters = BackupCounters()
        self.tracking = changes.FULL
        self.warnings: list[str] = []

    def progress(self) -> dict[str, int]:
        return self.counters.as_map()

    async def run(self) -> None:
        source = await self._open_source()
        replies = self._replies.open(self._extents_key)
        try:
            self.counters.blocks_total = source.blocks
            if self._task.parent:
                await self._track_changes(source)
            resume_at: tuple[int, int] | None = (0, 0)
            if self._task.attempt > 0:
                resume_at = await self._resume_point(replies)
            if resume_at is not None:
                async with contextlib.AsyncExitStack() as stack:
                    if self._lookup is not None:
                        await stack.enter_async_context(self._lookup)
                    extent_records = await self._send_disk(source, *resume_at)
                await self._finish(source, extent_records, replies)
        except (BlockferryError, OSError) as exc:
            await self._give_up(source, exc)
            raise
        finally:
            self._replies.close(self._extents_key)
            await source.close()

    async def _open_source(self) -> Source:
        """Open the disk; a qcow2 image through its own qemu-nbd, its dirty bitmaps
        prepared first (see :mod:`qcow2`); a restore point through its repository."""
        path, bitmap = self._task.path, self._task.dirty_bitmap or None
        if is_restore_point_uri(path):
            if self._open_copy_source is None:
                raise SourceError(f"{path}: a restore point is read by a copy, not a backup")
            return await self._open_copy_source()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self._pool, qcow2.is_qcow2, path):
            return await open_source(path, self._block_size, self._pool, bitmap)
        if bitmap:
            raise SourceError(
                f"opening {path}: the dirty bitmaps of a qcow2 image are kept by blockferry;"
                " --dirty-bitmap is for NBD exports"
            )
        image = Path(path)
        if self._task.restore_point:
            prepared = await qcow2.prepare_bitmaps(
                image, self._task.job, self._task.parent, self._task.restore_point
            )
            bitmap = prepared.parent_bitmap
            if prepared.warning:
                self.warnings.append(prepared.warning)
                log.warning("%s: %s", self._extents_key, prepared.warning)
        return await NbdSource.export(image, self._block_size, bitmap)

    async def _track_changes(self, source: Source) -> None:
        """Fetch the parent's fixed index and choose how to find the changed blocks."""
        assert self._task.parent is not None
        self._parent = await changes.fetch_fixed_index(
            self._mesh,
            self._replies,
            self._repo_name,
            self._task.parent,
            self._task.disk,
            self._config.stored_wait_s,
        )
        self.tracking = changes.DIGEST_COMPARE
        parent = self._parent.restore_point
        if isinstance(source, RestorePointSource) and source.same_digests:
            self._to_read = source.differing_blocks(self._parent)
            self.tracking = changes.SOURCE_DIGESTS
        elif isinstance(source, NbdSource) and source.bitmap:
            bitmap = source.bitmap
            # named after the parent: by the operator, or by us in a qcow2 image
            if bitmap in (parent, qcow2.bitmap_name(self._task.job, parent)):
                self._to_read = await source.dirty_blocks()
                self.tracking = changes.DIRTY_BITMAP
            else:
                why = f"dirty bitmap {bitmap} does not track changes since the parent"
                self.warnings.append(f"{why} {parent}; every block was read and compared instead")
                log.warning("%s: %s", self._extents_key, why)
        elif self._task.changed_ranges_pages:
            wanted, why = await self._changed_ranges(source)
            if wanted is None:
                self.warnings.append(f"{why}; every block was read and compared instead")
                log.warning("%s: %s", self._extents_key, why)
            else:
                self._to_read = wanted
                self.tracking = changes.CHANGED_RANGES

    async def _changed_ranges(self, source: Source) -> tuple[BlockSet | None, str]:
        """The blocks the operator's changed-ranges map names, or None and why not."""
        assert self._parent is not None
        ref = self._task.changed_ranges_pages
        assert ref is not None
        pages = changed_ranges.read(self._mesh, ref, self._config.stored_wait_s)
        try:
            return await changes.blocks_in_pages(pages, self._parent, source.size, self._block_size)
        except SessionError as exc:
            return None, str(exc)

    async def _resume_point(self, replies: asyncio.Queue[Any]) -> tuple[int, int] | None:
        """Where a re-offered task resumes (block, extents records sent): after the last
        extents record the target side holds with every block durable; from the start
        when it does not answer; None when the disk is stored already."""
        attempt = self._task.attempt
        query = ResumeQuery(session_id=self._task.session_id, disk=self._task.disk, attempt=attempt)
        await self._mesh.producer.send_and_wait(
            self._mesh.topics.extents(self._repo_name), query, key=self._extents_key
        )
        try:
            _, result = await self._reply_for(replies, (ResumePoint,), attempt)
        except TimeoutError as exc:
            log.warning("%s: %s; starting from the first block", self._extents_key, exc)
            return 0, 0
        assert isinstance(result, ResumePoint)
        if result.stored:
            log.info("%s: stored already by attempt %d's mover", self._extents_key, attempt - 1)
            self.counters.blocks_done = self.counters.blocks_resumed = self.counters.blocks_total
            return None
        block, records = result.block, result.extent_records
        log.info("%s: resuming at block %d (attempt %d)", self._extents_key, block, attempt)
        self.counters.blocks_done = self.counters.blocks_resumed = block
        return block, records

    async def _give_up(self, source: Source, exc: BaseException) -> None:
        """Tell the target side to drop what it has of this disk (best effort)."""
        try:
            await self._send_end(source, 0, 0, error=str(exc) or type(exc).__name__)
        except Exception as send_exc:
            log.warning("telling the target to drop %s: %s", self._extents_key, send_exc)

    async def _send_disk(self, source: Source, start_block: int, first_record: int) -> int:
        """Send the chunks (once each) and extents of the blocks from ``start_block`` on;
        return how many extents records the disk has in all."""
        windows: deque[asyncio.Future[list[PreparedBlock]]] = deque()
        batch_blocks: list[int] = []
        batch_digests: list[bytes] = []
        extent_records = first_record
        indexes = iter(range(start_block, source.blocks))
        if self._to_read is not None:
            self.counters.blocks_skipped = source.blocks - len(self._to_read)
            self.counters.blocks_done += self.counters.blocks_skipped  # progress counts them
            indexes = self._to_read.iter_from(start_block)
        zero = await source.zero_blocks()
        if isinstance(source, RestorePointSource):
            read = self._to_read.iter_from(start_block) if self._to_read is not None else None
            await source.stream(
                BlockSet(
                    source.blocks,
                    (i for i in (read or range(start_block, source.blocks)) if i not in zero),
                )
            )
        next_index = next(indexes, None)
        throttle = Throttle(self._config.read_limit_mib_s * 1024 * 1024)
        try:
            while next_index is not None or windows:
                while next_index is not None and len(windows) < WINDOWS_IN_FLIGHT:
                    window: list[int] = []
                    while next_index is not None and len(window) < self._config.in_flight:
                        await throttle.take(source.block_size)
                        window.append(next_index)
                        next_index = next(indexes, None)
                    windows.append(asyncio.ensure_future(self._settle(source, window, zero)))
                for block in await windows.popleft():
                    await self._account(block, resend=False)
                    if block.unchanged:
                        continue
                    batch_blocks.append(block.index)
                    batch_digests.append(block.digest)
                    if len(batch_blocks) >= self._config.extents_per_record:
                        await self._drain()  # extents never reach Kafka before their chunks
                        await self._send_extents(extent_records, batch_blocks, batch_digests)
                        extent_records += 1
                        batch_blocks, batch_digests = [], []
        finally:
            for pending in windows:
                pending.cancel()
        if batch_blocks:
            await self._drain()
            await self._send_extents(extent_records, batch_blocks, batch_digests)
            extent_records += 1
        return extent_records

    async def _settle(
        self, source: Source, window: list[int], zero: BlockSet
    ) -> list[PreparedBlock]:
        """Read and digest a window's blocks, look their new digests up, compress the
        unknown ones. A file's blocks are read in one pool call per worker, not one per
        block, which spares the event loop a wake-up per block."""
        if isinstance(source, FileSource):
            prepared = await self._in_slices(
                window, lambda i: self._prepare_file_block(source, i, i in zero, resend=False)
            )
        else:
            prepared = list(
                await asyncio.gather(*(self._prepare(source, i, i in zero) for i in window))
            )
        fresh = [b for b in prepared if b.data is not None]
        if fresh and self._lookup is not None:
            known = await self._lookup.known([b.digest for b in fresh])
            for block in fresh:
                if block.digest in known:
                    block.data, block.deduplicated = None, "global"
        await self._in_slices([b for b in prepared if b.data is not None], self._pack)
        return prepared

    async def _in_slices(self, items: list[T], fn: Callable[[T], R]) -> list[R]:
        """``fn`` over ``items`` in the pool, one call per worker on a contiguous slice;
        the results in the order of ``items``."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self._config.workers)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        done = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _each, fn, part) for part in parts)
        )
        return [result for part in done for result in part]

    def _zero_block(self, source: Source, index: int) -> PreparedBlock:
        """A block the source says is zero, accounted without reading it."""
        size = min(self._block_size, source.size - index * self._block_size)
        unchanged = self._parent_digest(index) == blocks.ZERO_DIGEST
        return PreparedBlock(index, size, blocks.ZERO_DIGEST, unchanged, read=False)

    def _prepare(
        self, source: Source, index: int, known_zero: bool = False, resend: bool = False
    ) -> asyncio.Future[PreparedBlock]:
        """Read block ``index`` and digest it in the pool: a file is read there too, an
        NBD export is read here; a block the export calls zero is not read at all."""
        loop = asyncio.get_running_loop()
        if isinstance(source, FileSource):
            return loop.run_in_executor(
                self._pool, self._prepare_file_block, source, index, known_zero, resend
            )
        if known_zero:
            done: asyncio.Future[PreparedBlock] = loop.create_future()
            done.set_result(self._zero_block(source, index))
            return done

        async def read_then_process() -> PreparedBlock:
            data = await source.read_block(index)
            return await loop.run_in_executor(self._pool, self._process, index, data, resend)

        return asyncio.ensure_future(read_then_process())

    def _prepare_file_block(
        self, source: FileSource, index: int, known_zero: bool, resend: bool
    ) -> PreparedBlock:
        """Read and digest block ``index`` of a file (a thread); a known zero is not read."""
        if known_zero:
            return self._zero_block(source, index)
        return self._process(index, source.read_block(index), resend)

    def _parent_digest(self, index: int) -> bytes | None:
        return self._parent.digest(index) if self._parent is not None else None

    def _process(self, index: int, data: bytes, resend: bool) -> PreparedBlock:
        """Zero-test and digest block ``index``; keep its bytes if it is new (a thread)."""
        parent = self._parent_digest(index)
        if blocks.is_zero(data):
            return PreparedBlock(index, len(data), blocks.ZERO_DIGEST, parent == blocks.ZERO_DIGEST)
        digest = blocks.digest(data, self._key)
        if not resend:
            if digest == parent:
                return PreparedBlock(index, len(data), digest, unchanged=True)
            if self._parent is not None and digest in self._parent.known:
                return PreparedBlock(index, len(data), digest, deduplicated="parent")
            if digest in self._sent:
                return PreparedBlock(index, len(data), digest, deduplicated="session")
            self._sent.add(digest)
        return PreparedBlock(index, len(data), digest, data=data)

    def _pack(self, block: PreparedBlock) -> None:
        """Compress a block to send, if that makes it smaller, and checksum it (a thread)."""
        assert block.data is not None
        block.stored, block.compressed = block.data, False
        if self._level:
            packed = blocks.compress(block.data, self._level)
            if len(packed) < len(block.data):
                block.stored, block.compressed = packed, True
        block.checksum = signed64(blocks.checksum(block.stored))
        block.data = None

    async def _account(self, block: PreparedBlock, resend: bool) -> None:
        c = self.counters
        c.blocks_done += 0 if resend else 1
        if not block.read:
            c.blocks_hole += 1
        else:
            c.blocks_read += 1
            c.bytes_read += block.size
            self._metrics.blocks.labels("read").inc()
            self._metrics.bytes.labels("read").inc(block.size)
        if block.unchanged:
            c.blocks_unchanged += 1
            return
        if not resend:
            c.blocks_changed += 1
        if block.digest == blocks.ZERO_DIGEST:
            c.blocks_zero += 1
            self._metrics.blocks.labels("zero").inc()
        elif block.stored is None:
            if block.deduplicated == "parent":
                c.blocks_deduplicated_parent += 1
            elif block.deduplicated == "session":
                c.blocks_deduplicated_session += 1
            else:
                c.blocks_deduplicated_global += 1
            self._metrics.blocks.labels("deduplicated").inc()
        else:
            await self._send_chunk(block)
            if resend:
                c.blocks_resent += 1
            c.blocks_sent += 1
            c.bytes_sent += len(block.stored)
            c.bytes_sent_plain += block.size
            self._metrics.blocks.labels("sent").inc()
            self._metrics.bytes.labels("sent").inc(len(block.stored))
            self._metrics.bytes.labels("sent_plain").inc(block.size)

    async def _send_chunk(self, block: PreparedBlock) -> None:
        assert block.stored is not None
        chunk = Chunk(
            session_id=self._task.session_id,
            digest=block.digest,
            compressed=block.compressed,
            plain_size=block.size,
            checksum=block.checksum,
            data=block.stored,
        )
        future = await self._mesh.bulk_producer.send(
            self._mesh.topics.chunks(self._repo_name), chunk, key=block.digest
        )
        self._unacked.append(future)
        while len(self._unacked) > MAX_UNACKED_CHUNKS:
            await self._unacked.popleft()

    async def _send_extents(self, seq: int, indexes: list[int], digests: list[bytes]) -> None:
        extents = Extents(
            session_id=self._task.session_id,
            disk=self._task.disk,
            seq=seq,
            blocks=indexes,
            digests=b"".join(digests),
        )
        await self._mesh.producer.send(
            self._mesh.topics.extents(self._repo_name), extents, key=self._extents_key
        )

    @property
    def _extents_key(self) -> str:
        return f"{self._task.session_id}/{self._task.disk}"

    async def _drain(self) -> None:
        """Wait until the broker acknowledged every chunk sent so far."""
        while self._unacked:
            await self._unacked.popleft()

    async def _finish(
        self, source: Source, extent_records: int, replies: asyncio.Queue[Any]
    ) -> None:
        """Send the end marker; resend what the target reports missing; wait until stored."""
        for attempt in range(self._config.resend_attempts + 1):
            await self._drain()
            await self._send_end(source, extent_records, attempt)
            reply, answer = await self._reply_for(replies, (DiskStored, MissingBlocks), attempt)
            if reply.ok:
                return
            missing = answer.blocks if isinstance(answer, MissingBlocks) else []
            if not missing:
                raise SessionError(f"target refused disk {self._task.disk}: {reply.error}")
            log.warning(
                "target misses %d blocks of %s; sending them again", len(missing), self._extents_key
            )
            await self._resend(source, missing)
        raise SessionError(
            f"disk {self._task.disk}: blocks still missing after"
            f" {self._config.resend_attempts} resends"
        )

    async def _send_end(
        self, source: Source, extent_records: int, attempt: int, error: str = ""
    ) -> None:
        end = DiskEnd(
            session_id=self._task.session_id,
            task_id=self._task.task_id,
            job=self._task.job,
            disk=self._task.disk,
            disk_size=source.size,
            block_size=self._block_size,
            extent_records=extent_records,
            parent=self._task.parent,
            attempt=attempt,
            error=error,
        )
        await self._mesh.producer.send_and_wait(
            self._mesh.topics.extents(self._repo_name), end, key=self._extents_key
        )

    async def _reply_for(
        self,
        queue: asyncio.Queue[Any],
        kinds: tuple[type[DiskStored | MissingBlocks | ResumePoint], ...],
        attempt: int,
    ) -> tuple[Reply, DiskStored | MissingBlocks | ResumePoint]:
        """The next answer of one of ``kinds`` for ``attempt``; others are skipped."""
        names = [name for name, kind in DISK_ANSWERS.items() if kind in kinds]
        while True:
            record = await next_record(
                queue, self._config.stored_wait_s, f"{names[0]} of disk {self._extents_key}"
            )
            reply = record.value
            if not isinstance(reply, Reply) or reply.name not in names:
                continue
            try:
                answer = self._mesh.codec.decode_as(reply.result, DISK_ANSWERS[reply.name])
            except RecordError as exc:
                log.warning("%s: an answer that cannot be read: %s", self._extents_key, exc)
                continue
            if answer.attempt == attempt:
                return reply, answer

    async def _resend(self, source: Source, indexes: list[int]) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(source, RestorePointSource):
            await source.stream(BlockSet(source.blocks, indexes))
        for index in indexes:
            block = await self._prepare(source, index, resend=True)
            if block.data is not None:
                await loop.run_in_executor(self._pool, self._pack, block)
            await self._account(block, resend=True)


def _each(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(item) for item in items]
