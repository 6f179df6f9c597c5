"""Publishing to a repository's compacted index changelog: where each chunk is, and
tombstones for chunks garbage collection removed. Each goes to its digest's shard.
At start-up the changelog is reconciled with the packs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from blockferry.ingest.context import IngestContext
from blockferry.repository import Repository
from blockferry.repository.pack import PackEntry
from blockferry.transport.kafka import Partition, RecordConsumer, shard_of
from blockferry.transport.records import IndexEntry


async def publish_entries(ctx: IngestContext, entries: Sequence[PackEntry]) -> None:
    futures = [
        await ctx.mesh.producer.send(
            ctx.mesh.topics.index(ctx.name),
            IndexEntry(
                digest=e.digest,
                pack_id=e.pack_id,
                offset=e.offset,
                stored_size=e.stored_size,
                plain_size=e.plain_size,
                compressed=e.compressed,
            ),
            key=e.digest,
            partition=shard_of(e.digest, ctx.repo.config.shard_count),
        )
        for e in entries
    ]
    for future in futures:
        await future


async def publish_tombstones(ctx: IngestContext, digests: Sequence[bytes]) -> None:
    futures = [
        await ctx.mesh.producer.send(
            ctx.mesh.topics.index(ctx.name),
            None,
            key=digest,
            partition=shard_of(digest, ctx.repo.config.shard_count),
        )
        for digest in digests
    ]
    for future in futures:
        await future


async def reconcile(ctx: IngestContext) -> int:
    """Tombstone every digest whose newest changelog record is an entry although no
    sealed pack holds its chunk; returns how many. A crash between garbage collection
    deleting packs and publishing their tombstones leaves such entries, and the dedupe
    index would go on naming chunks that are gone.

    Run at start-up, after the sealed packs' entries were published again. Each shard is
    read to its end before the pack index is refreshed: a pack's index file is written
    before its entries are published, so the refreshed index holds the pack of every
    entry read, even one another instance sealed meanwhile. A digest stored again by
    another instance after that refresh could have its new entry published before the
    tombstone, so the index is refreshed once more once the tombstones are acknowledged
    and such digests get their entries again.

    Memory: the shards are read one after another, each into the set of its digests
    whose newest record is an entry: O(the shard's changelog keys). The records are not
    kept (as ``read_to_end`` would): the changelog's head, not compacted yet, holds every
    start-up's republished entries.
    """
    topic = ctx.mesh.topics.index(ctx.name)
    consumer = ctx.mesh.consumer(f"reconcile-{ctx.name}")
    await consumer.start()
    reconciled = 0
    try:
        for partition in sorted(await ctx.mesh.producer.partitions_for(topic)):
            listed = await _listed(consumer, Partition(topic, partition))
            gone = await ctx.in_pool(_unstored, ctx.repo, listed)
            if gone:
                await publish_tombstones(ctx, gone)
                await publish_entries(ctx, await ctx.in_pool(_stored, ctx.repo, gone))
                reconciled += len(gone)
    finally:
        await consumer.stop()
    return reconciled


async def _listed(consumer: RecordConsumer, tp: Partition) -> set[bytes]:
    """The digests whose newest record on the partition ``tp`` is an entry."""
    await consumer.read_from(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    listed: set[bytes] = set()
    while await consumer.position(tp) < end:
        for record in await consumer.poll(timeout_ms=200, max_records=5000):
            if record.key is None:
                continue
            if record.name == "Tombstone":
                listed.discard(record.key)
            elif record.name == "IndexEntry":
                listed.add(record.key)
    return listed


def _unstored(repo: Repository, digests: Iterable[bytes]) -> list[bytes]:
    """The digests no sealed pack holds, by the freshly refreshed index (a thread)."""
    repo.refresh_index()
    return sorted(d for d in digests if repo.locate(d) is None)


def _stored(repo: Repository, digests: Iterable[bytes]) -> list[PackEntry]:
    """Where the digests that are stored after all are, by the refreshed index (a thread)."""
    repo.refresh_index()
    return [e for e in map(repo.locate, digests) if e is not None]
