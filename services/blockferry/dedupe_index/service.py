"""The dedupe-index role: answers "which of these digests does the repository hold?"

Each repository's lookups topic has one partition per shard, like its chunks
and index changelog. Instances join one consumer group on every lookups topic;
the shards a member is assigned are the ones it answers for. On assignment it
reads the shard's compacted index changelog into its LMDB store from where it
last stopped (the whole changelog the first time), and answers the shard's
lookups once it has caught up with the changelog's end as it was then; a lookup
waiting for that longer than its asker does is dropped, and the asker sends the
chunk. An index that lags the changelog by a moment only answers "unknown" for
a chunk stored that moment ago, which costs a resend and never loses data: the
target side checks every block's presence when it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from blockferry import failpoints
from blockferry.core.blocks import DIGEST_SIZE
from blockferry.dedupe_index.metrics import DedupeIndexMetrics
from blockferry.dedupe_index.settings import DedupeIndexSettings
from blockferry.dedupe_index.store import ShardStore
from blockferry.failpoints import Point
from blockferry.mesh import Mesh, RepositoryDirectory
from blockferry.transport.kafka import Partition, Record
from blockferry.transport.records import IndexEntry, LookupReply, LookupRequest

log = logging.getLogger(__name__)

METADATA_REFRESH_MS = 2000
"""How soon a new repository's lookups topic is noticed (a metadata request each time)."""


@dataclass
class Shard:
    """A shard this instance answers for, and whether its store has caught up."""

    repo: str
    number: int
    catch_up_to: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class _Rebalance:
    def __init__(self, index: DedupeIndex) -> None:
        self._index = index

    async def on_revoked(self, revoked: list[Partition]) -> None:
        self._index.release(revoked)

    async def on_assigned(self, assigned: list[Partition]) -> None:
        self._index.take(assigned)


class DedupeIndex:
    """Serves the lookups of the shards assigned to this instance."""

    name = "dedupe-index"

    def __init__(self, settings: DedupeIndexSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._config = settings.dedupe_index
        self._mesh = Mesh(settings, self.name)
        self._metrics = DedupeIndexMetrics(registry)
        self._lookups = self._mesh.consumer(
            "lookups",
            group="dedupe-index",
            auto_offset_reset="latest",
            metadata_max_age_ms=METADATA_REFRESH_MS,
        )
        self._changelog = self._mesh.consumer("changelog")
        self._directory = RepositoryDirectory(self._mesh)
        self._stores: dict[str, ShardStore] = {}
        self._shards: dict[Partition, Shard] = {}
        """Keyed by the shard's changelog partition."""
        self._reassign = asyncio.Event()
        self._waiting: set[asyncio.Task[None]] = set()
        self._joined: set[str] = set()
        """The lookups topics subscribed at the last completed rebalance."""
        self._running = False

    @property
    def ready(self) -> bool:
        """Running, joined the group for every announced repository's lookups topic, and
        every shard it holds caught up with its changelog (an instance that holds no shard,
        because there are more instances than shards, is ready too)."""
        announced = {self._mesh.topics.lookups(name) for name in self._directory.names}
        subscribed = self._lookups.subscription()
        return (
            self._running
            and announced | subscribed <= self._joined
            and all(shard.ready.is_set() for shard in self._shards.values())
        )

    async def start(self) -> None:
        await self._mesh.start()
        await self._directory.start()
        await self._changelog.start()
        pattern = rf"^{re.escape(self._mesh.topics.prefix)}\..+\.lookups$"
        await self._lookups.start(listener=_Rebalance(self), pattern=pattern)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_changelog())
            group.create_task(self._directory.run())
            self._running = True
            await self._serve()

    async def stop(self) -> None:
        self._running = False
        for task in list(self._waiting):
            task.cancel()
        await self._lookups.stop()
        await self._changelog.stop()
        await self._directory.stop()
        await self._mesh.stop()
        for store in self._stores.values():
            store.close()

    def take(self, assigned: list[Partition]) -> None:
        """Begin answering for the shards of these lookups partitions."""
        self._joined = self._lookups.subscription()
        for tp in assigned:
            repo = self._mesh.topics.repository_of_lookups(tp.topic)
            if repo is not None:
                self._shards[self._changelog_of(repo, tp.partition)] = Shard(repo, tp.partition)
        self._reassign.set()
        self._metrics.shards.set(len(self._shards))

    def release(self, revoked: list[Partition]) -> None:
        """Stop answering for these shards; their stores stay for a quick return."""
        for tp in revoked:
            repo = self._mesh.topics.repository_of_lookups(tp.topic)
            if repo is not None:
                self._shards.pop(self._changelog_of(repo, tp.partition), None)
        self._reassign.set()
        self._metrics.shards.set(len(self._shards))

    def _changelog_of(self, repo: str, shard: int) -> Partition:
        return Partition(self._mesh.topics.index(repo), shard)

    def _store(self, repo: str) -> ShardStore:
        store = self._stores.get(repo)
        if store is None:
            path = self._settings.data_dir / "dedupe-index" / repo
            store = ShardStore(path, self._config.store_map_size_gib * 1024**3)
            self._stores[repo] = store
        return store

    async def _follow_changelog(self) -> None:
        """Keep the stores of the assigned shards up to date with their changelogs."""
        consumer = self._changelog
        while True:
            if self._reassign.is_set():
                self._reassign.clear()
                await self._follow_assigned()
            if not self._shards:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reassign.wait(), 1.0)
                continue
            batch = await self._changelog.poll(timeout_ms=200, max_records=5000)
            if self._reassign.is_set():
                continue  # fetched under the old assignment: read again from the stores' offsets
            by_partition: dict[Partition, list[Record]] = {}
            for record in batch:
                tp = record.source
                by_partition.setdefault(tp, []).append(record)
            for tp, records in by_partition.items():
                shard = self._shards.get(tp)
                if shard is not None:
                    await self._apply(shard, records)
            for tp, shard in list(self._shards.items()):
                if not shard.ready.is_set() and await consumer.position(tp) >= shard.catch_up_to:
                    shard.ready.set()
                    log.info("shard %s/%d ready", shard.repo, shard.number)

    async def _follow_assigned(self) -> None:
        """Read the changelogs of the assigned shards, each from where its store stopped."""
        consumer = self._changelog
        tps = sorted(self._shards)
        consumer.assign(tps)
        if not tps:
            return
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            shard = self._shards[tp]
            store = self._store(shard.repo)
            stored = await asyncio.to_thread(store.next_offset, shard.number)
            if stored is None or not starts[tp] <= stored <= ends[tp]:
                if stored is not None:
                    log.warning(
                        "shard %s/%d: stored offset %d outside the changelog's %d..%d;"
                        " reading it again from the start",
                        shard.repo,
                        shard.number,
                        stored,
                        starts[tp],
                        ends[tp],
                    )
                await asyncio.to_thread(store.clear, shard.number)
                stored = starts[tp]
            consumer.seek(tp, stored)
            shard.catch_up_to = ends[tp]
            if stored >= ends[tp]:
                shard.ready.set()

    async def _apply(self, shard: Shard, records: list[Record]) -> None:
        changes: list[tuple[bytes, bytes | None]] = []
        for record in records:
            if record.key is None or len(record.key) != DIGEST_SIZE:
                continue
            if record.value is None:
                changes.append((record.key, None))
            elif isinstance(record.value, IndexEntry):
                changes.append((record.key, _location(record.value)))
        store = self._store(shard.repo)
        await asyncio.to_thread(store.apply, shard.number, changes, records[-1].offset + 1)
        failpoints.reached(Point.DEDUPE_INDEX_APPLIED)
        self._metrics.changelog_records.inc(len(records))

    async def _serve(self) -> None:
        async for batch in self._lookups.batches(timeout_ms=500, max_records=256):
            done: dict[Partition, int] = {}
            acks: list[asyncio.Future[Any]] = []
            for record in batch:
                done[record.source] = record.offset + 1
                if isinstance(record.value, LookupRequest):
                    ack = await self._answer_when_ready(record, record.value)
                    if ack is not None:
                        acks.append(ack)
            await _settle(acks)
            if acks:
                failpoints.reached(Point.DEDUPE_INDEX_ANSWERED)
            await self._lookups.commit(done)

    async def _answer_when_ready(
        self, record: Record, request: LookupRequest
    ) -> asyncio.Future[Any] | None:
        """Answer now if the shard is ready (the reply's ack), else once it is."""
        repo = self._mesh.topics.repository_of_lookups(record.topic)
        shard = None
        if repo is not None:
            shard = self._shards.get(self._changelog_of(repo, record.partition))
        if shard is None:
            return None
        late_s = request.deadline_ms / 1000 - time.time()
        if late_s <= 0:
            self._metrics.lookups.labels("late").inc()
            return None
        if shard.ready.is_set():
            return await self._answer(shard, request)

        async def answer_once_ready() -> None:
            try:
                await asyncio.wait_for(shard.ready.wait(), late_s)
            except TimeoutError:
                self._metrics.lookups.labels("not-ready").inc()
                return
            await _settle([await self._answer(shard, request)])

        task = asyncio.create_task(answer_once_ready())
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return None

    async def _answer(self, shard: Shard, request: LookupRequest) -> asyncio.Future[Any]:
        raw = request.digests
        digests = [raw[i : i + DIGEST_SIZE] for i in range(0, len(raw), DIGEST_SIZE)]
        known = self._store(shard.repo).known(shard.number, digests)
        bitmap = bytearray((len(digests) + 7) // 8)
        for i, hit in enumerate(known):
            if hit:
                bitmap[i // 8] |= 1 << (i % 8)
        self._metrics.lookups.labels("answered").inc()
        self._metrics.digests.labels("asked").inc(len(digests))
        self._metrics.digests.labels("known").inc(sum(known))
        reply = LookupReply(
            correlation_id=request.reply_to, request_id=request.request_id, known=bytes(bitmap)
        )
        return await self._mesh.producer.send(
            self._mesh.topics.lookup_replies(shard.repo), reply, key=request.reply_to
        )


async def _settle(acks: list[asyncio.Future[Any]]) -> None:
    """Wait for replies' acks; a reply that failed only makes its asker send the chunks."""
    for outcome in await asyncio.gather(*acks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            log.warning("a lookup reply was not delivered: %s", outcome)


def _location(entry: IndexEntry) -> bytes:
    """Where an index entry says its chunk is: pack, offset, stored and plain size."""
    return (
        f"{entry.pack_id}:{entry.offset}:{entry.stored_size}:{entry.plain_size}"
        f":{int(entry.compressed)}"
    ).encode()
