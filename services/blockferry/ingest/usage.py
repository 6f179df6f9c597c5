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

MEASURE_EVERY_S = 60.0
"""How often a repository is measured: a listing of its packs, quarantine and locks
(three LIST requests on an S3 store)."""


@dataclass(frozen=True)
class Usage:
    size_bytes: int
    """The sealed packs' bytes: what the chunks take (restore points and indexes aside)."""
    free_bytes: int | None
    """Free space of the file system it lives on; None where that is not known (a
    bucket, a share)."""
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
    return Usage(size, _free_bytes(storage), quarantined, max(oldest, 0.0))


def _free_bytes(storage: object) -> int | None:
    while isinstance(storage, StorageView):
        storage = storage.base
    if isinstance(storage, LocalStorage):
        return shutil.disk_usage(storage.root).free
    return None


async def keep_measuring(ctx: IngestContext) -> None:
    """Set the repository's usage gauges now and every :data:`MEASURE_EVERY_S`."""
    metrics, name = ctx.metrics, ctx.name
    while True:
        try:
            usage = await ctx.in_maintenance(measure, ctx.repo)
        except (BlockferryError, OSError) as exc:
            log.warning("measuring repository %s: %s", name, exc)
        else:
            metrics.size.labels(name).set(usage.size_bytes)
            if usage.free_bytes is not None:
                metrics.free.labels(name).set(usage.free_bytes)
            metrics.quarantined.labels(name).set(usage.quarantined_chunks)
            metrics.oldest_lock.labels(name).set(usage.oldest_lock_seconds)
        await asyncio.sleep(MEASURE_EVERY_S)
