"""Publishing to a repository's compacted index changelog: where each chunk is, and
tombstones for chunks garbage collection removed. Each goes to its digest's shard."""

from __future__ import annotations

from collections.abc import Sequence

from blockferry.ingest.context import IngestContext
from blockferry.repository.pack import PackEntry
from blockferry.transport.kafka import shard_of


async def publish_entries(ctx: IngestContext, entries: Sequence[PackEntry]) -> None:
    futures = [
        await ctx.mesh.producer.send(
            ctx.mesh.topics.index(ctx.name),
            "IndexEntry",
            {
                "digest": e.digest,
                "pack_id": e.pack_id,
                "offset": e.offset,
                "stored_size": e.stored_size,
                "plain_size": e.plain_size,
                "compressed": e.compressed,
            },
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
            "IndexEntry",
            None,
            key=digest,
            partition=shard_of(digest, ctx.repo.config.shard_count),
        )
        for digest in digests
    ]
    for future in futures:
        await future
