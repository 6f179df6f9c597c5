"""What every part of one repository's target side shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from blockferry.core.errors import LockBusy
from blockferry.ingest.config import IngestConfig
from blockferry.ingest.metrics import IngestMetrics
from blockferry.mesh import Mesh
from blockferry.repository import Repository

T = TypeVar("T")

LOCK_RETRY_S = 2.0
"""How often a commit or a disk's end tries the repository's lock again."""


@dataclass(frozen=True)
class IngestContext:
    """One repository served by one target-side instance.

    Args:
        name: the repository's name in the mesh (its topics are named after it).
        pool: threads for repository I/O and CPU work, off the event loop.
        maintenance: threads for garbage collection, prune and verify, which may run
            for hours: kept apart, so they never hold every ingestion thread.
    """

    mesh: Mesh
    repo: Repository
    name: str
    config: IngestConfig
    metrics: IngestMetrics
    pool: Executor
    maintenance: Executor

    async def in_pool(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def in_maintenance(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the maintenance pool."""
        return await asyncio.get_running_loop().run_in_executor(self.maintenance, fn, *args)

    async def when_unlocked(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the pool; while it finds the repository held by a
        garbage collection or prune (LockBusy), again every few seconds, for up to
        ``lock_wait_s``. The wait holds no thread."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.lock_wait_s
        while True:
            try:
                return await self.in_pool(fn, *args)
            except LockBusy:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(LOCK_RETRY_S)
