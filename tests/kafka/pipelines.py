"""One repository's target side running in-process on the real broker, for tests."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from blockferry.core import blocks
from blockferry.ingest.config import IngestConfig
from blockferry.ingest.in_place import InPlaceAccess
from blockferry.ingest.metrics import IngestMetrics
from blockferry.ingest.pipeline import RepositoryPipeline
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.repository.pack import PackEntry
from blockferry.settings import BulkClient, CommonSettings, KafkaSettings
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.records import IndexEntry

REPO = "default"


@dataclass
class RunningPipeline:
    mesh: Mesh
    repo: Repository
    replies: Mailbox
    """Every reply of the repository's owner, by correlation id (open one before asking)."""
    task: asyncio.Task[None]


@asynccontextmanager
async def running_pipeline(
    bootstrap: str,
    prefix: str,
    repo: Repository,
    config: IngestConfig,
    bulk_client: BulkClient = "librdkafka",
) -> AsyncIterator[RunningPipeline]:
    """The repository's pipeline and a mailbox on its replies, stopped on exit."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, bulk_client=bulk_client)
    mesh = Mesh(CommonSettings(kafka=kafka), "target-mover")
    await mesh.start()
    pool = ThreadPoolExecutor(2)
    access = InPlaceAccess(
        location=repo.where,
        secret=None,
        restore_roots=[],
        exports_dir=Path(tempfile.gettempdir()),
        tls_dir=None,
    )
    metrics = IngestMetrics(CollectorRegistry(), "test")
    pipeline = RepositoryPipeline(mesh, repo, REPO, config, metrics, pool, pool, access)
    await pipeline.start()
    running = asyncio.create_task(pipeline.run())
    replies = mesh.mailbox("replies", mesh.topics.replies(REPO), "correlation_id")
    await replies.start()
    reading = asyncio.create_task(replies.run())
    try:
        yield RunningPipeline(mesh, repo, replies, running)
    finally:
        running.cancel()
        reading.cancel()
        await asyncio.gather(running, reading, return_exceptions=True)
        await replies.stop()
        await pipeline.stop()
        await mesh.stop()
        pool.shutdown()


def write_pack(repo: Repository, seeds: list[int]) -> list[PackEntry]:
    """Seal a pack of one chunk per seed, as chunk intake or repacking does."""
    writer = repo.open_pack()
    for seed in seeds:
        plain = b"block %d " % seed * 1000
        writer.add(blocks.digest(plain, repo.config.dedupe_key), plain, False, len(plain))
    return writer.seal().entries


async def newest_records(mesh: Mesh) -> dict[str, PackEntry | None]:
    """The newest record of each digest (in hex) on the index changelog (None: a
    tombstone)."""
    consumer = mesh.consumer("changelog-check")
    await consumer.start()
    try:
        await consumer.assign_all_from_start(mesh.topics.index(REPO))
        newest: dict[str, PackEntry | None] = {}
        for record in await consumer.read_to_end():
            assert record.key is not None
            f = record.value
            if f is None:
                newest[record.key.hex()] = None
            else:
                assert isinstance(f, IndexEntry), record
                newest[record.key.hex()] = PackEntry(
                    f.digest, f.pack_id, f.offset, f.stored_size, f.plain_size, f.compressed
                )
        return newest
    finally:
        await consumer.stop()
