"""One restore task: the pipe reversed. The target side streams a restore point's
blocks; this mover checks each against the restore point's fixed index and writes
the destination through a DiskWriter, which publishes it only when whole.

Checks, end to end:

* Before anything is written, the mover fetches the restore point's fixed index of
  the disk from the repository's owner (the same ``fixed-index`` command an
  incremental backup uses for its parent). A block is written only if the fixed
  index names a non-zero digest at its position, the record carries that digest,
  and the plaintext has it; so a block whose number was changed on the way is
  refused, never written at the wrong offset.
* The blocks received must be exactly the non-zero blocks of the fixed index: a
  duplicate is ignored (not written again, not counted); a block that never came is
  an error naming the blocks and their byte ranges, never zeros. Only the blocks
  the fixed index marks as zero are left as holes (zeros on a device). With
  ``allow_holes``, the blocks whose chunk the owner reported damaged or missing are
  left as zeros too, and listed in the task's warnings.
* Each attempt names itself (a random attempt id in the restore command, echoed in
  every record of its stream): records of another attempt of the same session are
  ignored, and a RestoreStart of a newer attempt (a higher task attempt, taken by
  another mover after the lease expired) stops this one, which removes its
  temporary file: two writers of one destination never both publish.

Memory is bounded by back-pressure from the destination, whatever the disk's size
and the destination's speed. Each restore task reads its stream with a consumer of
its own, assigned to the one partition its session's records go to, and fetches
the next records only when the previous ones are written: Kafka (the restore
topic, kept as long as chunks are) is the buffer. A consumer with records not yet
handed out does not fetch again, so a task holds at most one fetch
(``STREAM_FETCH_BYTES``, 4 MiB, or one record if larger) plus the
``STREAM_RECORDS`` records in hand (at most 4 blocks), whatever the disk's size. With
the client's copies of a fetch and the decoded records, the bound is about
3 x 4 MiB + 2 x 4 blocks: under 40 MiB at 1 MiB blocks (measured: +19 MiB restoring
128 MiB at 5 MiB/s, tests/e2e/test_restore_memory.py). A shared consumer with a
bounded queue per session would have to pause a whole partition when one
session's queue is full, and every other session on that partition would wait for
the slowest destination (for ever, for a hung one); consumers of their own cannot
block each other. The cost is one consumer per running restore (``max_tasks`` at
most per mover). A destination slower than the topic's retention allows loses the
stream's head: the missing blocks are then an error, never zeros.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from pathlib import Path

from blockferry import failpoints
from blockferry.core import blocks
from blockferry.core.block_set import BlockSet
from blockferry.core.errors import CorruptionError, SessionError
from blockferry.failpoints import Point
from blockferry.mesh import Mesh
from blockferry.restore_target import DiskWriter, check_destination, check_within_roots
from blockferry.source_mover.changes import ParentIndex, fetch_fixed_index
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.source_mover.settings import SourceMoverConfig
from blockferry.source_mover.throttle import Throttle
from blockferry.transport.codec import unsigned64
from blockferry.transport.commands import RESTORE, RestoreArguments
from blockferry.transport.kafka import RecordConsumer
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.native import NativeConsumer
from blockferry.transport.records import (
    RestoreBlock,
    RestoreEnd,
    RestoreStart,
    Task,
)

RESTORE_IDLE_TIMEOUT_S = 120.0
STREAM_FETCH_BYTES = 4 * 1024 * 1024
"""The most one fetch of a restore stream brings (a larger record still comes, alone)."""
STREAM_RECORDS = 4
"""Records of a restore stream taken from the consumer at a time."""
RANGES_NAMED = 16
"""Runs of blocks an error or warning names before it says how many more."""


class RestoreStream:
    """The records of one session's restore stream, fetched only as they are taken."""

    def __init__(self, consumer: RecordConsumer | NativeConsumer, session: str) -> None:
        self._consumer = consumer
        self._session = session
        self._ready: deque[RestoreStart | RestoreBlock | RestoreEnd] = deque()

    @classmethod
    async def open(cls, mesh: Mesh, topic: str, session: str) -> RestoreStream:
        """Read the session's partition of ``topic`` from its end: open it before the
        restore command is sent."""
        consumer = mesh.bulk_consumer(
            f"restore-{uuid.uuid4().hex[:8]}",
            check_crcs=False,  # restore blocks carry their own checksum
            fetch_max_bytes=STREAM_FETCH_BYTES,
        )
        await consumer.start()
        try:
            await consumer.assign_key_from_end(topic, session.encode())
        except BaseException:
            await consumer.stop()
            raise
        return cls(consumer, session)

    async def next(self, timeout: float) -> RestoreStart | RestoreBlock | RestoreEnd:
        """The session's next record, or TimeoutError when none came for ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._ready:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(
                    f"no restore data for session {self._session} within {timeout:.0f} s"
                )
            batch = await self._consumer.poll(
                timeout_ms=int(min(left, 1.0) * 1000), max_records=STREAM_RECORDS
            )
            self._ready.extend(
                r.value
                for r in batch
                if isinstance(r.value, RestoreStart | RestoreBlock | RestoreEnd)
                and r.value.session_id == self._session
            )
        return self._ready.popleft()

    async def close(self) -> None:
        await self._consumer.stop()


class RestoreRun:
    """Writes one disk of a restore point to the task's destination."""

    def __init__(
        self,
        mesh: Mesh,
        config: SourceMoverConfig,
        metrics: SourceMoverMetrics,
        pool: Executor,
        task: Task,
        dedupe_key: bytes,
        replies: Mailbox,
        restore_roots: list[Path],
    ) -> None:
        self._mesh = mesh
        self._config = config
        self._restore_roots = restore_roots
        self._metrics = metrics
        self._pool = pool
        self._task = task
        self._key = dedupe_key
        self._replies = replies
        self.attempt_id = uuid.uuid4().hex
        self.tracking = ""
        self.warnings: list[str] = []
        self.counters: dict[str, int] = {
            "blocks_total": 0,
            "blocks_done": 0,
            "blocks_written": 0,
            "blocks_duplicate": 0,
            "blocks_hole": 0,
            "bytes_written": 0,
        }
        """blocks_written: non-zero blocks written; blocks_duplicate: records of a block
        already written, ignored; blocks_hole: damaged blocks left as zeros."""

    def progress(self) -> dict[str, int]:
        return dict(self.counters)

    async def run(self) -> None:
        session = self._task.session_id
        writer: DiskWriter | None = None
        stream: RestoreStream | None = None
        writes: deque[tuple[int, Future[None]]] = deque()
        """Blocks being checked and written in the pool, ``workers`` at most: the
        checksum, decompression, digest and write of a block run in parallel with the
        next ones (zstd and blake3 let go of the interpreter lock)."""
        loop = asyncio.get_running_loop()
        try:
            # refuse a destination before the target side reads and streams anything
            destination = Path(self._task.path)
            await loop.run_in_executor(
                self._pool, check_within_roots, destination, self._restore_roots
            )
            await loop.run_in_executor(
                self._pool,
                functools.partial(check_destination, destination, force=self._task.force),
            )
            if self._task.restore_point is None:
                raise SessionError(f"restore {session}: the task names no restore point")
            fidx = await fetch_fixed_index(
                self._mesh,
                self._replies,
                self._task.repository,
                self._task.restore_point,
                self._task.disk,
                RESTORE_IDLE_TIMEOUT_S,
            )
            expected = fidx.nonzero_blocks()
            stream = await RestoreStream.open(
                self._mesh, self._mesh.topics.restore(self._task.repository), session
            )
            arguments = RestoreArguments(
                session_id=session,
                restore_point=fidx.restore_point,
                disk=self._task.disk,
                attempt_id=self.attempt_id,
                attempt=self._task.attempt,
            )
            await self._mesh.commands.send(
                self._mesh.topics.requests(self._task.repository),
                RESTORE,
                arguments,
                RESTORE_IDLE_TIMEOUT_S,
            )
            throttle = Throttle(self._config.write_limit_mib_s * 1024 * 1024)
            received = BlockSet(len(fidx.digests))
            """The blocks written or being written."""
            while True:
                record = await stream.next(RESTORE_IDLE_TIMEOUT_S)
                if record.attempt_id != self.attempt_id:
                    self._check_not_superseded(record)
                    continue
                if isinstance(record, RestoreStart):
                    self._check_start(fidx, record)
                    writer = await loop.run_in_executor(
                        self._pool,
                        functools.partial(
                            DiskWriter.open,
                            destination,
                            record.disk_size,
                            block_size=record.block_size,
                            force=self._task.force,
                        ),
                    )
                    self.counters["blocks_total"] = len(fidx.digests)
                elif isinstance(record, RestoreBlock):
                    if writer is None:
                        raise SessionError(f"restore {session}: block before start of stream")
                    if record.block in received:
                        self.counters["blocks_duplicate"] += 1
                        continue
                    self._check_position(fidx, record)
                    await throttle.take(record.plain_size)
                    received.add(record.block)
                    writes.append(
                        (record.plain_size, self._pool.submit(self._write, writer, record))
                    )
                    while len(writes) >= self._config.workers:
                        await self._written(*writes.popleft())
                else:
                    if record.error:
                        raise SessionError(f"restore {session}: {record.error}")
                    if writer is None:
                        raise SessionError(f"restore {session}: end before start of stream")
                    while writes:
                        await self._written(*writes.popleft())
                    missing = set(received.missing(expected))
                    holes = self._holes(fidx, missing, set(record.damaged))
                    await loop.run_in_executor(self._pool, _finish, writer, received)
                    writer = None
                    self.counters["blocks_done"] = self.counters["blocks_total"]
                    self.counters["blocks_hole"] = len(holes)
                    return
        finally:
            if stream is not None:
                await stream.close()
            # a write still running ends before its file is aborted
            running = [asyncio.wrap_future(w) for _, w in writes if not w.done()]
            if running:
                await asyncio.wait(running)
            if writer is not None:
                await loop.run_in_executor(self._pool, writer.abort)

    async def _written(self, size: int, write: Future[None]) -> None:
        """Wait for a block's write (raising its error), then count it."""
        await asyncio.wrap_future(write)
        self.counters["blocks_written"] += 1
        self.counters["blocks_done"] += 1
        self.counters["bytes_written"] += size
        self._metrics.bytes.labels("restored").inc(size)

    def _check_not_superseded(self, record: RestoreStart | RestoreBlock | RestoreEnd) -> None:
        """Another attempt's record is ignored, unless it starts a newer attempt."""
        if isinstance(record, RestoreStart) and record.attempt > self._task.attempt:
            raise SessionError(
                f"restore {self._task.session_id}: attempt {record.attempt} of this task"
                f" started elsewhere; attempt {self._task.attempt} stops and writes nothing"
            )

    def _check_start(self, fidx: ParentIndex, record: RestoreStart) -> None:
        if (record.disk_size, record.block_size) != (fidx.disk_size, fidx.block_size):
            raise CorruptionError(
                f"restoring {self._what()}: the stream is of a disk of {record.disk_size}"
                f" bytes in blocks of {record.block_size}, the fixed index of"
                f" {fidx.disk_size} bytes in blocks of {fidx.block_size}"
            )

    def _check_position(self, fidx: ParentIndex, record: RestoreBlock) -> None:
        """The fixed index must name the record's digest at the record's block."""
        index = record.block
        want = fidx.digests[index] if 0 <= index < len(fidx.digests) else None
        if want is None or want == blocks.ZERO_DIGEST:
            raise CorruptionError(
                f"restoring {self._what()}: the stream carries block {index}, which the"
                " fixed index does not name as a data block; nothing is written for it"
            )
        length = min(fidx.block_size, fidx.disk_size - index * fidx.block_size)
        if not 0 < record.plain_size <= length:  # checked before it sizes anything
            raise CorruptionError(
                f"restoring {self._what()}: block {index} claims {record.plain_size}"
                f" plaintext bytes, the block has {length}; nothing is written for it"
            )
        if record.digest != want:
            raise CorruptionError(
                f"restoring {self._what()}: block {index}"
                f" ({byte_range(index, fidx.block_size, fidx.disk_size)}) arrived with"
                f" digest {record.digest.hex()}, the fixed index names {want.hex()}"
            )

    def _holes(self, fidx: ParentIndex, missing: set[int], damaged: set[int]) -> list[int]:
        """The blocks to leave as zeros, with allow_holes; raise for any other missing."""
        allow = bool(self._task.allow_holes)
        holes = sorted(missing & damaged) if allow else []
        unexplained = missing - set(holes)
        if unexplained:
            bad = sorted(unexplained & damaged)
            lost = sorted(unexplained - damaged)
            parts = []
            if bad:
                parts.append(
                    f"{describe_blocks(bad, fidx.block_size, fidx.disk_size)} not sent: their"
                    " chunks are damaged or missing in the repository"
                )
            if lost:
                parts.append(
                    f"{describe_blocks(lost, fidx.block_size, fidx.disk_size)} never arrived"
                )
            hint = "" if allow or not bad else " (--allow-holes restores the rest as zeros)"
            raise CorruptionError(
                f"restoring {self._what()}: {'; '.join(parts)}; nothing was published{hint}"
            )
        if holes:
            self.warnings.append(
                f"{describe_blocks(holes, fidx.block_size, fidx.disk_size)} left as zeros"
                " (holes): their chunks are damaged or missing in the repository"
            )
        return holes

    def _what(self) -> str:
        return f"disk {self._task.disk} of {self._task.restore_point} to {self._task.path}"

    def _write(self, writer: DiskWriter, record: RestoreBlock) -> None:
        """Check a block end to end and write it (a thread)."""
        writer.write_block(record.block, plaintext(record, self._key))
        failpoints.reached(Point.RESTORE_BLOCK_WRITTEN)


def plaintext(record: RestoreBlock, key: bytes) -> bytes:
    """A restore block's bytes, checked end to end: the checksum of what travelled, then
    the size and digest (under the repository's dedupe ``key``) of the plaintext.

    Raises:
        CorruptionError: the block does not check.
    """
    data: bytes = record.data
    if blocks.checksum(data) != unsigned64(record.checksum):
        raise CorruptionError(f"restore block {record.block}: checksum mismatch in transit")
    if record.compressed:
        data = blocks.decompress(data, record.plain_size)
    if len(data) != record.plain_size or blocks.digest(data, key) != record.digest:
        raise CorruptionError(
            f"restore block {record.block}: digest mismatch for {record.digest.hex()}"
        )
    return data


def _finish(writer: DiskWriter, received: BlockSet) -> None:
    """Every block not received is a zero block (checked before): holes in a file,
    zeros on a device."""
    for index in range(writer.block_count):
        if index not in received:
            writer.write_zeros(index)
    failpoints.reached(Point.RESTORE_WRITTEN)
    writer.commit()


def byte_range(index: int, block_size: int, disk_size: int) -> str:
    """Block ``index``'s bytes, as ``bytes [start, end)``."""
    return f"bytes [{index * block_size}, {min((index + 1) * block_size, disk_size)})"


def describe_blocks(indexes: Iterable[int], block_size: int, disk_size: int) -> str:
    """Blocks by runs with their byte ranges: ``blocks 3-5 (bytes [786432, 1572864))``."""
    runs: list[tuple[int, int]] = []
    for index in sorted(indexes):
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    count = sum(last - first + 1 for first, last in runs)
    named = []
    for first, last in runs[:RANGES_NAMED]:
        end = min((last + 1) * block_size, disk_size)
        what = f"block {first}" if first == last else f"blocks {first}-{last}"
        named.append(f"{what} (bytes [{first * block_size}, {end}))")
    more = f" and {len(runs) - RANGES_NAMED} more runs" if len(runs) > RANGES_NAMED else ""
    noun = "block" if count == 1 else "blocks"
    return f"{count} {noun}: {', '.join(named)}{more}"
