"""What every part of one repository's target side shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from blockferry.ingest.config import IngestConfig
from blockferry.ingest.metrics import IngestMetrics
from blockferry.mesh import Mesh
from blockferry.repository import Repository

T = TypeVar("T")


@dataclass(frozen=True)
class IngestContext:
    """One repository served by one target-side instance.

    Args:
        name: the repository's name in the mesh (its topics are named after it).
        pool: threads for repository I/O and CPU work, off the event loop.
    """

    mesh: Mesh
    repo: Repository
    name: str
    config: IngestConfig
    metrics: IngestMetrics
    pool: Executor

    async def in_pool(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
