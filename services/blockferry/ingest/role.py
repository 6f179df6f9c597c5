"""A role that owns repositories: the target mover and the gateway are this one role,
placed differently (next to directly attached disks, or next to a share or bucket) and
serving different backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from prometheus_client import CollectorRegistry

from blockferry.core.errors import ConfigError, RepositoryNotFound, WrongKey
from blockferry.ingest.config import IngestSettings
from blockferry.ingest.in_place import InPlaceAccess
from blockferry.ingest.metrics import IngestMetrics
from blockferry.ingest.pipeline import RepositoryPipeline
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.repository.keys import Secret
from blockferry.repository.locations import open_storage, scheme
from blockferry.repository.s3_storage import S3Storage
from blockferry.repository.storage_views import MeteredStorage, StorageMetrics

log = logging.getLogger(__name__)

AWAIT_REPOSITORY_S = 5.0
"""How often a repository not created yet is looked for."""


class IngestRole:
    """Every write to the repositories this instance owns (shared with its other
    instances, which split each repository's partitions)."""

    name: str
    schemes: ClassVar[tuple[str, ...]]
    """The kinds of location (:mod:`~blockferry.repository.locations`) it serves."""
    directories_shared: ClassVar[bool]
    """Whether the directories it serves are shares other hosts mount too."""

    def __init__(self, settings: IngestSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        config = settings.ingest()
        self._mesh = Mesh(settings, self.name)
        self._metrics = IngestMetrics(registry, self.name)
        self._storage_metrics = StorageMetrics(registry, self.name)
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix=self.name)
        self._maintenance = ThreadPoolExecutor(
            config.maintenance_workers, thread_name_prefix="maintenance"
        )
        self._pipelines: list[RepositoryPipeline] = []
        self._awaited: dict[str, str] = {}
        """Repositories not created yet (name -> location): served once they are."""
        self.ready = False

    async def start(self) -> None:
        repositories = self._settings.repositories()
        for name, location in sorted(repositories.items()):
            if scheme(location) not in self.schemes:
                raise ConfigError(
                    f"repository {name} at {location}: the {self.name.replace('-', ' ')} serves"
                    f" {', '.join(self.schemes)} locations only (a share or bucket is the"
                    " gateway's)"
                )
        await self._mesh.start()
        for name, location in sorted(repositories.items()):
            try:
                await self._serve(name, location)
            except RepositoryNotFound as exc:
                log.warning("%s; repository %s is served once it is there", exc, name)
                self._awaited[name] = location

    async def _serve(self, name: str, location: str) -> RepositoryPipeline:
        """Open repository ``name`` and start its pipeline.

        Raises:
            RepositoryNotFound: it is not created yet.
        """
        repo = await asyncio.to_thread(self._open, name, location)
        key_file = self._settings.repository_key_file(name)
        access = InPlaceAccess(
            location=location,
            secret=Secret.key_file(key_file) if repo.config.encrypted else None,
            restore_roots=self._settings.restore_root_dirs(),
            exports_dir=self._settings.data_dir / "exports",
            tls_dir=self._settings.ingest().export_tls_dir,
        )
        pipeline = RepositoryPipeline(
            self._mesh,
            repo,
            name,
            self._settings.ingest(),
            self._metrics,
            self._pool,
            self._maintenance,
            access,
        )
        await pipeline.start()
        self._pipelines.append(pipeline)
        return pipeline

    def _open(self, name: str, location: str) -> Repository:
        storage = open_storage(location, check_writes=True, shared=self.directories_shared)
        if isinstance(storage, S3Storage):
            self._storage_metrics.count_backend_requests(name, storage.requests)
        key_file = self._settings.repository_key_file(name)
        secret = Secret.key_file(key_file) if key_file.exists() else None
        try:
            return Repository.open(
                MeteredStorage(storage, self._storage_metrics, name, scheme(location)),
                secret=secret,
            )
        except WrongKey as exc:
            raise WrongKey(f"{exc} (the {self.name.replace('-', ' ')} reads {key_file})") from exc

    async def run(self) -> None:
        """Serve every repository; ready once all are served (one not created yet, as
        after a first install before `blockferry repo init`, is waited for)."""
        async with asyncio.TaskGroup() as group:
            for pipeline in self._pipelines:
                group.create_task(pipeline.run())
            while self._awaited:
                await asyncio.sleep(AWAIT_REPOSITORY_S)
                for name, location in sorted(self._awaited.items()):
                    with contextlib.suppress(RepositoryNotFound):
                        group.create_task((await self._serve(name, location)).run())
                        del self._awaited[name]
                        log.info("repository %s at %s is there: serving it", name, location)
            self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for pipeline in self._pipelines:
            await pipeline.stop()
        await self._mesh.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._maintenance.shutdown(wait=True, cancel_futures=True)
