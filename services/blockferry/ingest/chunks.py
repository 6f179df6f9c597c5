"""Chunk intake: verify each new chunk, append it to its partition's open pack,
seal, publish the pack's entries to the index changelog, and only then commit
the consumer offsets. A replayed chunk finds its digest stored and changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from dataclasses import dataclass

from blockferry import failpoints
from blockferry.core import blocks
from blockferry.core.errors import CorruptionError, RepositoryError
from blockferry.failpoints import Point
from blockferry.ingest.changelog import publish_entries, reconcile
from blockferry.ingest.context import IngestContext
from blockferry.repository import PackWriter
from blockferry.transport.codec import unsigned64
from blockferry.transport.kafka import Partition, Record
from blockferry.transport.records import Chunk
from blockferry.transport.topics import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

STORAGE_RETRY_S = 5.0
REPUBLISH_BATCH = 10_000
"""Chunks published at a time at start-up: bounds the entries held at once."""


@dataclass
class OpenPack:
    """A partition's pack being filled, and the offset after its last record."""

    writer: PackWriter
    next_offset: int
    last_added: float


class _Rebalance:
    def __init__(self, intake: ChunkIntake) -> None:
        self._intake = intake

    async def on_revoked(self, revoked: list[Partition]) -> None:
        for tp in revoked:
            await self._intake.seal(tp)

    async def on_assigned(self, assigned: list[Partition]) -> None:
        # The previous owner of these partitions sealed packs this instance has not
        # indexed yet: without them a replayed chunk would be stored a second time.
        if assigned:
            await self._intake.refresh_index()


INTAKE_FETCH_BYTES = 2 * MAX_RECORD_BYTES
"""What one fetch of the chunk consumer brings, and what it keeps fetched ahead: the
consumer's share of the target mover's memory (a fetch's buffer lives until the last
of its records is handled)."""


class ChunkIntake:
    """The chunk consumer of one repository on one target-side instance."""

    def __init__(self, ctx: IngestContext) -> None:
        self._ctx = ctx
        self._consumer = ctx.mesh.bulk_consumer(
            f"chunks-{ctx.name}",
            group=f"{ctx.name}.target",
            check_crcs=False,  # chunks carry their own checksum
            fetch_max_bytes=INTAKE_FETCH_BYTES,
        )
        self._open: dict[Partition, OpenPack] = {}
        self._done: dict[Partition, int] = {}
        self.seal_requested = asyncio.Event()
        self.sealed = asyncio.Condition()
        self.storage_error: RepositoryError | None = None
        """The last failure to write the repository (a full disk, say), until a pack seals."""

    async def start(self) -> None:
        removed = await self._ctx.in_pool(self._ctx.repo.remove_leftovers)
        if removed:
            log.warning(
                "%s: removed %d unsealed packs and temporaries left by a crash",
                self._ctx.name,
                removed,
            )
        removed = 0
        if not self._ctx.config.append_only:  # else `repo gc`, which may delete, does it
            removed = await self._ctx.in_pool(self._ctx.repo.remove_interrupted_commits)
        if removed:
            log.warning(
                "%s: removed the fixed indexes of %d commits cut short by a crash",
                self._ctx.name,
                removed,
            )
        indexed = await self._ctx.when_unlocked(
            functools.partial(self._ctx.repo.rebuild_index, missing_only=True)
        )
        if indexed:
            log.warning(
                "%s: indexed %d sealed packs that had no index file", self._ctx.name, indexed
            )
        await self._republish()
        reconciled = await reconcile(self._ctx)
        if reconciled:
            log.warning(
                "%s: tombstoned %d changelog entries of chunks no pack holds (a crash"
                " during garbage collection)",
                self._ctx.name,
                reconciled,
            )
        await self._consumer.start([self._ctx.mesh.topics.chunks(self._ctx.name)], _Rebalance(self))

    async def stop(self) -> None:
        for tp in list(self._open):
            await self.seal(tp)
        await self._consumer.stop()

    async def refresh_index(self) -> None:
        """Index the packs other instances sealed since this one last looked."""
        await self._ctx.in_pool(self._ctx.repo.refresh_index)

    async def _republish(self) -> None:
        """Publish every located chunk again: a crash may have come between sealing a
        pack and publishing it, and publishing is idempotent.

        The entries come from the pack index (its snapshot and index files, loaded
        anyway), never from the packs: a start reads no pack, which on object storage
        would be requests per pack. A pack whose footer is damaged is served as its
        index file lists it; ``repo check`` names it."""
        repo = self._ctx.repo
        entries = await self._ctx.in_pool(lambda: iter(repo.located_entries()))
        published = 0
        while batch := await self._ctx.in_pool(
            lambda: list(itertools.islice(entries, REPUBLISH_BATCH))
        ):
            await publish_entries(self._ctx, batch)
            published += len(batch)
        if published:
            log.info("%s: republished %d chunks to the index changelog", self._ctx.name, published)

    async def run(self) -> None:
        async for batch in self._consumer.batches(timeout_ms=100, max_records=32):
            try:
                if batch:
                    await self._take(batch)
                await self._seal_due()
                await self._commit_done()
            except RepositoryError as exc:
                await self._back_off(exc)

    async def _back_off(self, exc: RepositoryError) -> None:
        """Drop the open packs and read their chunks again later: nothing was committed
        past them, so nothing is lost, and what is sealed stays as it is."""
        log.error("%s: %s; retrying in %.0f s", self._ctx.name, exc, STORAGE_RETRY_S)
        self.storage_error = exc
        for tp, pack in list(self._open.items()):
            await self._ctx.in_pool(pack.writer.abort)
            del self._open[tp]
        self._done = {}
        await self._consumer.rewind_to_committed()
        await asyncio.sleep(STORAGE_RETRY_S)

    async def _take(self, batch: list[Record]) -> None:
        checks = [
            self._ctx.in_pool(self._check, record.value)
            if isinstance(record.value, Chunk) and not self._known(record.value.digest)
            else None
            for record in batch
        ]
        for record, check in zip(batch, checks, strict=True):
            tp = record.source
            chunk = record.value
            if not isinstance(chunk, Chunk):
                await self._consumer.dead_letter(record, f"unexpected {record.name} on chunk topic")
            elif check is not None:
                problem = await check
                if problem:
                    self._ctx.metrics.chunks.labels(self._ctx.name, "rejected").inc()
                    await self._consumer.dead_letter(record, problem)
                elif self._known(chunk.digest):  # an earlier record of this batch stored it
                    self._ctx.metrics.chunks.labels(self._ctx.name, "duplicate").inc()
                else:
                    await self._add(tp, record.offset, chunk)
            else:
                self._ctx.metrics.chunks.labels(self._ctx.name, "duplicate").inc()
            self._mark(tp, record.offset + 1)

    def _known(self, digest: bytes) -> bool:
        if self._ctx.repo.locate(digest) is not None:
            return True
        return any(pack.writer.contains(digest) for pack in self._open.values())

    def _check(self, chunk: Chunk) -> str:
        """Why the chunk must be rejected, or "" (a thread): the target recomputes the
        digest so a buggy or hostile source cannot poison a digest for everyone."""
        data, digest, size = chunk.data, chunk.digest, chunk.plain_size
        if len(digest) != blocks.DIGEST_SIZE:
            return f"chunk digest has {len(digest)} bytes"
        if blocks.checksum(data) != unsigned64(chunk.checksum):
            return f"chunk {digest.hex()}: checksum mismatch"
        if not 0 < size <= self._ctx.repo.config.block_size:
            return f"chunk {digest.hex()}: plain size {size} out of range"
        try:
            plain = blocks.decompress(data, size) if chunk.compressed else data
        except CorruptionError as exc:
            return f"chunk {digest.hex()}: {exc}"
        if len(plain) != size:
            return f"chunk {digest.hex()}: plaintext has {len(plain)} bytes, not {size}"
        if blocks.digest(plain, self._ctx.repo.config.dedupe_key) != digest:
            return f"chunk {digest.hex()}: digest does not match its plaintext"
        return ""

    async def _add(self, tp: Partition, offset: int, chunk: Chunk) -> None:
        pack = self._open.get(tp)
        if pack is None:
            writer = await self._ctx.in_pool(self._ctx.repo.open_pack)
            pack = self._open[tp] = OpenPack(writer, offset + 1, time.monotonic())
        await self._ctx.in_pool(
            pack.writer.add, chunk.digest, chunk.data, chunk.compressed, chunk.plain_size
        )
        pack.last_added = time.monotonic()
        self._ctx.metrics.chunks.labels(self._ctx.name, "stored").inc()
        self._ctx.metrics.bytes_written.labels(self._ctx.name).inc(len(chunk.data))
        if pack.writer.size >= self._ctx.config.pack_size:
            await self.seal(tp)

    def _mark(self, tp: Partition, next_offset: int) -> None:
        pack = self._open.get(tp)
        if pack is None:
            self._done[tp] = next_offset
        else:
            pack.next_offset = next_offset

    async def _seal_due(self) -> None:
        """Seal the packs idle for long enough, or all when a disk waits for them; the
        packs of different partitions seal side by side (their fsyncs overlap)."""
        now = time.monotonic()
        requested = self.seal_requested.is_set()
        self.seal_requested.clear()
        due = [
            tp
            for tp, pack in self._open.items()
            if requested or now - pack.last_added >= self._ctx.config.idle_seal_s
        ]
        if due:
            outcomes = await asyncio.gather(
                *(self._seal_pack(tp) for tp in due), return_exceptions=True
            )
            await self._sealed()  # commits what did seal, even if another pack failed
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def seal(self, tp: Partition) -> None:
        """Seal the partition's open pack, publish its entries, then commit its offset."""
        await self._seal_pack(tp)
        await self._sealed()

    async def _sealed(self) -> None:
        await self._commit_done()
        async with self.sealed:
            self.sealed.notify_all()

    async def _seal_pack(self, tp: Partition) -> None:
        """Seal the partition's open pack and publish its entries (no commit yet)."""
        pack = self._open.pop(tp, None)
        if pack is None:
            return
        started = time.monotonic()
        sealed = await self._ctx.in_pool(pack.writer.seal)
        self._ctx.metrics.seal_seconds.labels(self._ctx.name).observe(time.monotonic() - started)
        self._ctx.metrics.packs_sealed.labels(self._ctx.name).inc()
        self.storage_error = None
        failpoints.reached(Point.PACK_SEALED)
        await publish_entries(self._ctx, sealed.entries)
        failpoints.reached(Point.CHANGELOG_PUBLISHED)
        self._done[tp] = pack.next_offset

    async def _commit_done(self) -> None:
        if self._done:
            done, self._done = self._done, {}
            await self._consumer.commit(done)
            failpoints.reached(Point.CHUNK_OFFSETS_COMMITTED)
