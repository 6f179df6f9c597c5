"""What a repository holds and has room for, measured every so often for the metrics:
its size, the free space where it lives, its quarantined chunks and its oldest lock."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime

from blockferry.core.errors import BlockferryError
from blockferry.ingest.context import IngestContext
from blockferry.repository import Repository, layout
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.storage_views import StorageView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    size_bytes: int
    """The sealed packs' bytes: what the chunks take (restore points and indexes aside)."""
    free_bytes: int | None
    """Free space of the file system it lives on; None where that is not known (a
    bucket, a share)."""
    filesystem_bytes: int | None
    """That file system's size."""
    quarantined_chunks: int
    oldest_lock_seconds: float
    """How long the oldest lock present has been held (0: none)."""


def measure(repo: Repository) -> Usage:
    storage = repo.storage
    size = sum(info.size for info in repo.sealed_packs().values())
    quarantined = len(storage.list_objects(layout.QUARANTINE))
    now = datetime.now(UTC)
    locks = repo.locks.list_locks()
    oldest = max(((now - info.time).total_seconds() for info in locks), default=0.0)
    free, total = _disk_usage(storage)
    return Usage(size, free, total, quarantined, max(oldest, 0.0))


def _disk_usage(storage: object) -> tuple[int | None, int | None]:
    """(free, size) of the file system a local repository lives on; else unknown."""
    while isinstance(storage, StorageView):
        storage = storage.base
    if isinstance(storage, LocalStorage):
        usage = shutil.disk_usage(storage.root)
        return usage.free, usage.total
    return None, None


async def keep_measuring(ctx: IngestContext) -> None:
    """Set the repository's usage gauges now and every ``measure_every_s`` (in a thread
    of its own: a long GC or verify in the maintenance thread does not hold it up)."""
    metrics, name = ctx.metrics, ctx.name
    while True:
        try:
            usage = await asyncio.to_thread(measure, ctx.repo)
        except (BlockferryError, OSError) as exc:
            log.warning("measuring repository %s: %s", name, exc)
        else:
            metrics.size.labels(name).set(usage.size_bytes)
            if usage.free_bytes is not None and usage.filesystem_bytes is not None:
                metrics.free.labels(name).set(usage.free_bytes)
                metrics.filesystem.labels(name).set(usage.filesystem_bytes)
            metrics.quarantined.labels(name).set(usage.quarantined_chunks)
            metrics.oldest_lock.labels(name).set(usage.oldest_lock_seconds)
        await asyncio.sleep(ctx.config.measure_every_s)
