"""The target mover role: every write to the directly attached repositories it owns."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from blockferry.core.errors import WrongKey
from blockferry.ingest.metrics import IngestMetrics
from blockferry.ingest.pipeline import RepositoryPipeline
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.repository.keys import Secret
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.storage_views import MeteredStorage, StorageMetrics
from blockferry.target_mover.settings import TargetMoverSettings


class TargetMover:
    name = "target-mover"

    def __init__(self, settings: TargetMoverSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._mesh = Mesh(settings, self.name)
        self._metrics = IngestMetrics(registry, self.name)
        self._storage_metrics = StorageMetrics(registry, self.name)
        self._pool = ThreadPoolExecutor(
            settings.target_mover.workers, thread_name_prefix="target-mover"
        )
        self._maintenance = ThreadPoolExecutor(
            settings.target_mover.maintenance_workers, thread_name_prefix="maintenance"
        )
        self._pipelines: list[RepositoryPipeline] = []
        self.ready = False

    async def start(self) -> None:
        await self._mesh.start()
        for name, path in sorted(self._settings.repositories().items()):
            storage = MeteredStorage(LocalStorage(path), self._storage_metrics, name)
            key_file = self._settings.repository_key_file(name)
            secret = Secret.key_file(key_file) if key_file.exists() else None
            try:
                repo = Repository.open(storage, secret=secret)
            except WrongKey as exc:
                raise WrongKey(f"{exc} (the target mover reads {key_file})") from exc
            pipeline = RepositoryPipeline(
                self._mesh,
                repo,
                name,
                self._settings.target_mover,
                self._metrics,
                self._pool,
                self._maintenance,
            )
            await pipeline.start()
            self._pipelines.append(pipeline)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for pipeline in self._pipelines:
                group.create_task(pipeline.run())
            self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for pipeline in self._pipelines:
            await pipeline.stop()
        await self._mesh.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._maintenance.shutdown(wait=True, cancel_futures=True)
