"""The target side of one repository: announce it, take chunks, assemble fixed
indexes, answer commands. The target mover runs it over a local repository; the
gateway will run it over a share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor

from blockferry.core.blocks import key_fingerprint
from blockferry.core.errors import CorruptionError
from blockferry.ingest.assembly import ExtentAssembly
from blockferry.ingest.chunks import ChunkIntake
from blockferry.ingest.commands import MoverRequests, OwnerCommands
from blockferry.ingest.config import IngestConfig
from blockferry.ingest.context import IngestContext
from blockferry.ingest.in_place import InPlace, InPlaceAccess
from blockferry.ingest.metrics import IngestMetrics
from blockferry.ingest.usage import keep_measuring
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.repository.damaged import check_metadata
from blockferry.transport.records import RepositoryInfo

log = logging.getLogger(__name__)


class RepositoryPipeline:
    """Everything the target side does for one repository."""

    def __init__(
        self,
        mesh: Mesh,
        repo: Repository,
        repo_name: str,
        config: IngestConfig,
        metrics: IngestMetrics,
        pool: Executor,
        maintenance: Executor,
        access: InPlaceAccess,
    ) -> None:
        metrics.for_repository(repo_name)
        self._ctx = ctx = IngestContext(mesh, repo, repo_name, config, metrics, pool, maintenance)
        self.intake = ChunkIntake(ctx)
        self.assembly = ExtentAssembly(ctx, self.intake)
        self.in_place = InPlace(ctx, access)
        self.commands = OwnerCommands(ctx, self.in_place.handlers())
        self.requests = MoverRequests(ctx)

    async def start(self) -> None:
        await self._check_metadata()
        await self._ctx.mesh.ensure_repository_topics(
            {self._ctx.name: self._ctx.repo.config.shard_count}
        )
        await self.intake.start()
        await self.assembly.start()
        await self.commands.start()
        await self.requests.start()
        await self._announce()

    async def _check_metadata(self) -> None:
        """Name, at start-up, metadata that cannot be read (log and metric). Backups and
        restores of everything else go on; GC and prune refuse until it is repaired or
        set aside, as they check for themselves, and start-up deletes nothing."""
        try:
            await self._ctx.in_pool(check_metadata, self._ctx.repo)
        except CorruptionError as exc:
            log.error("%s: %s", self._ctx.name, exc)
            self._ctx.metrics.unreadable_metadata.labels(self._ctx.name).set(1)

    async def _announce(self) -> None:
        config = self._ctx.repo.config
        info = RepositoryInfo(
            name=self._ctx.name,
            repository_id=config.id,
            block_size=config.block_size,
            shard_count=config.shard_count,
            owner=self._ctx.mesh.client_id,
            dedupe_key_fingerprint=key_fingerprint(config.dedupe_key),
        )
        await self._ctx.mesh.producer.send_and_wait(
            self._ctx.mesh.topics.repositories, info, key=self._ctx.name
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.intake.run())
            group.create_task(self.assembly.run())
            group.create_task(self.commands.run())
            group.create_task(self.requests.run())
            group.create_task(keep_measuring(self._ctx))
            group.create_task(self.in_place.run())

    async def stop(self) -> None:
        for part in (self.commands, self.requests, self.assembly, self.intake):
            with contextlib.suppress(Exception):
                await part.stop()
