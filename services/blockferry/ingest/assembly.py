"""Fixed-index assembly: collects a disk's extents, and at its end marker waits
(bounded) until every referenced digest is durable, reports missing blocks back
to the source mover, or writes the fixed index and reports the disk stored.

It runs beside chunk intake and never stops it: chunks and extents travel on
different topics, so neither arrives first reliably.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockferry import log_context
from blockferry.core import blocks, limits
from blockferry.core.errors import BlockferryError, RepositoryUnavailable
from blockferry.failpoints import Point
from blockferry.ingest.chunks import STORAGE_RETRY_S, ChunkIntake
from blockferry.ingest.context import IngestContext
from blockferry.transport import commands as cmd
from blockferry.transport.kafka import Partition, Record
from blockferry.transport.records import DiskEnd, Extents, Reply, ResumeQuery

log = logging.getLogger(__name__)


@dataclass
class DiskExtents:
    """What has arrived of one disk in one session."""

    key: str
    partition: Partition
    first_offset: int
    digests: dict[int, bytes] = field(default_factory=dict)
    record_ends: dict[int, int] = field(default_factory=dict)
    """Extents records arrived, by sequence number: the block after the last they name."""
    end: DiskEnd | None = None
    finishing: asyncio.Task[None] | None = None
    asked_again: dict[int, bytes] = field(default_factory=dict)
    """Blocks reported missing at the last end marker (a block the parent names may be
    among them: its chunk was removed or quarantined): the next end marker waits for
    their chunks as it waits for the extents'."""


class ExtentAssembly:
    """The extents consumer of one repository on one target-side instance."""

    def __init__(self, ctx: IngestContext, intake: ChunkIntake) -> None:
        self._ctx = ctx
        self._intake = intake
        self._consumer = ctx.mesh.consumer(f"extents-{ctx.name}", group=f"{ctx.name}.assembly")
        self._disks: dict[str, DiskExtents] = {}
        self._read_up_to: dict[Partition, int] = {}
        """Per partition, the offset after the last record read."""
        self._committed: dict[Partition, int] = {}
        self._group: asyncio.TaskGroup | None = None

    async def start(self) -> None:
        await self._consumer.start([self._ctx.mesh.topics.extents(self._ctx.name)])

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            async for batch in self._consumer.batches(timeout_ms=200, max_records=256):
                for record in batch:
                    refusal = self._refusal(record)
                    if refusal:
                        await self._refuse(record, refusal)
                    else:
                        self._take(record)
                await self._commit()

    def _refusal(self, record: Record) -> str:
        """Why a record's numbers are beyond any disk of this repository, or "": checked
        before anything is sized by them."""
        block_size = self._ctx.repo.config.block_size
        if isinstance(record.value, Extents):
            return limits.extents_refusal(record.value, block_size)
        if isinstance(record.value, DiskEnd) and not record.value.error:
            return limits.disk_end_refusal(record.value, block_size)
        return ""

    async def _refuse(self, record: Record, refusal: str) -> None:
        """Dead-letter a record; a refused end marker fails its disk (the source is told,
        and what arrived of the disk is dropped). A refused Extents record fails its disk
        at the end marker, which then misses it."""
        tp = record.source
        self._read_up_to[tp] = record.offset + 1
        await self._consumer.dead_letter(record, refusal)
        if isinstance(end := record.value, DiskEnd):
            self._disks.pop(f"{end.session_id}/{end.disk}", None)
            answer = cmd.DiskStored(attempt=end.attempt)
            await self._reply(end, answer, error=f"refusing the end marker: {refusal}")

    def _take(self, record: Record) -> None:
        tp = record.source
        self._read_up_to[tp] = record.offset + 1
        f = record.value
        if not isinstance(f, Extents | DiskEnd | ResumeQuery):
            log.warning("ignoring %s on the extents topic", record.name)
            return
        key = f"{f.session_id}/{f.disk}"
        assert self._group is not None
        if isinstance(f, ResumeQuery):
            self._group.create_task(self._answer_resume(self._disks.get(key), f))
            return
        disk = self._disks.get(key)
        if disk is None:
            disk = self._disks[key] = DiskExtents(key, tp, record.offset)
        if isinstance(f, Extents):
            digests = f.digests
            for i, index in enumerate(f.blocks):
                disk.digests[index] = digests[i * blocks.DIGEST_SIZE : (i + 1) * blocks.DIGEST_SIZE]
            disk.record_ends[f.seq] = max(f.blocks, default=-1) + 1
            return
        if f.error:
            log.warning("disk %s: the source gave up (%s); dropping its extents", key, f.error)
            self._disks.pop(key, None)
            return
        disk.end = f
        if disk.finishing is None or disk.finishing.done():
            disk.finishing = self._group.create_task(self._finish(disk, f))

    async def _commit(self) -> None:
        """Commit up to the first record of the oldest unfinished disk of each partition,
        so a restart reads every unfinished disk again and no finished one.

        Runs after every poll, records or not: a disk that finished since (its fixed
        index staged, or refused) lets its partition's offset move on. Otherwise a
        restart would finish committed sessions again and leave their fixed indexes
        in ``staging/`` for good.
        """
        assigned = self._consumer.assignment()
        offsets: dict[Partition, int] = {}
        for tp, up_to in self._read_up_to.items():
            pending = [d.first_offset for d in self._disks.values() if d.partition == tp]
            offset = min(pending) if pending else up_to
            if tp in assigned and self._committed.get(tp) != offset:
                offsets[tp] = offset
        await self._consumer.commit(offsets)
        self._committed.update(offsets)

    async def _finish(self, disk: DiskExtents, end: DiskEnd) -> None:
        with log_context.about(session=end.session_id, job=end.job, disk=end.disk):
            await self._finish_about(disk, end)

    async def _finish_about(self, disk: DiskExtents, end: DiskEnd) -> None:
        try:
            while True:
                try:
                    await self._finish_disk(disk, end)
                    return
                except RepositoryUnavailable as exc:  # waited out: the source waits too
                    log.warning("disk %s: %s; waiting for the repository's storage", disk.key, exc)
                    await asyncio.sleep(STORAGE_RETRY_S)
        except Exception as exc:  # answered to the source; assembly of other disks goes on
            if isinstance(exc, BlockferryError):
                log.error("disk %s: %s", disk.key, exc)
            else:
                log.exception("disk %s", disk.key)
            self._disks.pop(disk.key, None)
            await self._reply(end, cmd.DiskStored(attempt=end.attempt), error=str(exc))

    async def _finish_disk(self, disk: DiskExtents, end: DiskEnd) -> None:
        arrived, expected = disk.record_ends, end.extent_records
        if len(arrived) != expected or (
            arrived and (min(arrived), max(arrived)) != (0, expected - 1)
        ):
            raise BlockferryError(
                f"end marker expects {expected} extents records, {len(arrived)} arrived"
            )
        count = blocks.block_count(end.disk_size, end.block_size)
        if any(index >= count or index < 0 for index in disk.digests):
            raise BlockferryError("extents name blocks beyond the end of the disk")
        wanted = {**disk.asked_again, **disk.digests}
        missing = await self._wait_durable(wanted)
        if missing:
            disk.asked_again = {i: wanted[i] for i in missing}
        else:
            base = await self._ctx.in_pool(self._parent_digests, end)
            digests = [
                disk.digests.get(i, base[i] if i < len(base) else blocks.ZERO_DIGEST)
                for i in range(count)
            ]
            missing = await self._ctx.when_unlocked(self._stage_if_present, end, digests)
            disk.asked_again = {i: digests[i] for i in missing}
        if missing:
            log.warning(
                "disk %s: %d blocks not stored; asking for them again", disk.key, len(missing)
            )
            answer = cmd.MissingBlocks(attempt=end.attempt, blocks=missing)
            await self._reply(end, answer, error=f"{len(missing)} blocks missing")
            return
        self._ctx.metrics.disks_stored.labels(self._ctx.name).inc()
        log.info(
            "disk %s stored: %d blocks, %d of them changed", end.disk, count, len(disk.digests)
        )
        self._disks.pop(disk.key, None)
        await self._reply(end, cmd.DiskStored(attempt=end.attempt, blocks=count))

    def _parent_digests(self, end: DiskEnd) -> Sequence[bytes]:
        """The parent restore point's digests of the disk: an incremental's extents name
        only the blocks that changed since it, the others are the parent's."""
        if not end.parent:
            return ()
        repo = self._ctx.repo
        return repo.read_fixed_index(repo.restore_point(end.parent), end.disk).digests

    def _stage_if_present(self, end: DiskEnd, digests: list[bytes]) -> list[int]:
        """Under the repository's shared lock, so that no garbage collection runs between
        the check and the write: check every block's chunk is present, then stage the
        fixed index. Returns the blocks whose chunk is absent (nothing staged then)."""
        repo = self._ctx.repo
        with repo.shared_lock(f"fixed index of {end.session_id}/{end.disk}"):
            if repo.committed_as(end.job, end.session_id) is not None:
                return []  # a disk's end handled again after its session was committed
            repo.refresh_index()
            absent = [
                i
                for i, d in enumerate(digests)
                if d != blocks.ZERO_DIGEST and repo.locate(d) is None
            ]
            if not absent:
                repo.stage_fixed_index(end.session_id, end.disk, end.disk_size, digests)
                repo.hooks.reached(Point.STAGE_WRITTEN)
            return absent

    async def _answer_resume(self, disk: DiskExtents | None, query: ResumeQuery) -> None:
        """Tell a mover taking over a disk where to resume: after the longest run of
        extents records from the first whose blocks are all durable; or that the disk is
        stored already (its mover died before it could report so)."""
        if disk is None and await self._ctx.in_pool(
            self._ctx.repo.is_staged, query.session_id, query.disk
        ):
            await self._reply(query, cmd.ResumePoint(attempt=query.attempt, stored=True))
            return
        records = 0
        if disk is not None:
            while records in disk.record_ends:
                records += 1
            end = disk.record_ends[records - 1] if records else 0
            wanted = {i: d for i, d in disk.digests.items() if i < end}
            missing = await self._wait_durable(wanted)
            if missing:
                first = min(missing)
                records = sum(1 for seq in range(records) if disk.record_ends[seq] <= first)
        block = disk.record_ends[records - 1] if disk is not None and records else 0
        log.info(
            "disk %s/%s: attempt %d resumes at block %d (%d extents records held)",
            query.session_id,
            query.disk,
            query.attempt,
            block,
            records,
        )
        answer = cmd.ResumePoint(attempt=query.attempt, block=block, extent_records=records)
        await self._reply(query, answer)

    async def _wait_durable(self, wanted: dict[int, bytes]) -> list[int]:
        """The blocks of ``wanted`` whose digest is not in a sealed pack once the wait is over.

        The wait ends when no further block became durable for ``stored_wait_s``: a
        target far behind on a big disk keeps storing, and is not mistaken for loss.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ctx.config.stored_wait_s
        needed = {d for d in wanted.values() if d != blocks.ZERO_DIGEST}
        while True:
            await self._ctx.in_pool(self._ctx.repo.refresh_index)
            still = {d for d in needed if self._ctx.repo.locate(d) is None}
            if len(still) < len(needed):
                deadline = loop.time() + self._ctx.config.stored_wait_s
            needed = still
            error = self._intake.storage_error
            if isinstance(error, RepositoryUnavailable):  # no time lost to an outage
                deadline = loop.time() + self._ctx.config.stored_wait_s
            if not needed or loop.time() >= deadline:
                break
            if error is not None and not isinstance(error, RepositoryUnavailable):
                raise error
            self._intake.seal_requested.set()
            async with self._intake.sealed:
                try:
                    await asyncio.wait_for(self._intake.sealed.wait(), 0.5)
                except TimeoutError:
                    pass
        return sorted(i for i, d in wanted.items() if d in needed)

    async def _reply(
        self,
        about: DiskEnd | ResumeQuery,
        answer: cmd.DiskStored | cmd.MissingBlocks | cmd.ResumePoint,
        error: str = "",
    ) -> None:
        """Answer the disk's source mover: ok unless ``error``, named after ``answer``'s
        kind (see :data:`~blockferry.transport.commands.DISK_ANSWERS`)."""
        name = next(n for n, kind in cmd.DISK_ANSWERS.items() if isinstance(answer, kind))
        reply = Reply(
            correlation_id=f"{about.session_id}/{about.disk}",
            name=name,
            ok=not error,
            error=error,
            result=self._ctx.mesh.codec.encode(answer),
        )
        await self._ctx.mesh.producer.send_and_wait(
            self._ctx.mesh.topics.replies(self._ctx.name), reply, key=about.session_id
        )
