"""A role's handle on the mesh: codec, producer, topic names and consumers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from blockferry.core.errors import BlockferryError
from blockferry.settings import CommonSettings
from blockferry.transport.codec import Codec
from blockferry.transport.kafka import (
    ConsumerOptions,
    Producer,
    RecordConsumer,
    RecordProducer,
    ensure_topics,
)
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.native import NativeConsumer, NativeProducer
from blockferry.transport.records import RepositoryInfo
from blockferry.transport.rpc import CommandClient
from blockferry.transport.topics import FLOWS, OWNERS, Topics, TopicSpec

log = logging.getLogger(__name__)


class Mesh:
    """Everything a role needs to talk to the other roles over one Kafka cluster."""

    def __init__(self, settings: CommonSettings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.bootstrap = settings.kafka.bootstrap_servers
        self.topics = Topics(settings.kafka.topic_prefix)
        self.codec = Codec()
        self.client_id = f"{role}-{settings.instance}"
        self.security = settings.kafka.security.for_role(role)
        self.producer = RecordProducer(
            self.bootstrap,
            self.codec,
            self.client_id,
            request_timeout_ms=settings.kafka.request_timeout_ms,
            security=self.security,
        )
        self.commands = CommandClient(self.producer)
        self.native_bulk = settings.kafka.bulk_client == "librdkafka"
        produces_bulk = any(flow.bulk and role in flow.producers for flow in FLOWS)
        self.bulk_producer: Producer = (
            NativeProducer(
                self.bootstrap,
                self.codec,
                f"{self.client_id}-bulk",
                request_timeout_ms=settings.kafka.request_timeout_ms,
                security=self.security,
            )
            if self.native_bulk and produces_bulk
            else self.producer
        )
        """What produces bulk records (chunks, restore streams): see ``kafka.bulk_client``."""

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, self._shared_topics_used(), self.security)
        await self.producer.start()
        if self.bulk_producer is not self.producer:
            await self.bulk_producer.start()

    async def stop(self) -> None:
        if self.bulk_producer is not self.producer:
            await self.bulk_producer.stop()
        await self.producer.stop()

    def _shared_topics_used(self) -> list[TopicSpec]:
        """The shared topics this role produces or consumes: the ones it may create."""
        return self._used(self.topics.shared_specs(self.settings.kafka.topic_partitions))

    def _used(self, specs: list[TopicSpec]) -> list[TopicSpec]:
        used = []
        for spec in specs:
            flow = self.topics.flow(spec.name)
            if flow is not None and self.role in (*flow.producers, *flow.consumers):
                used.append(spec)
        return used

    async def ensure_repository_topics(self, shard_counts: dict[str, int]) -> None:
        """Create and check the topics of the repositories named (with their shard
        counts): every one where this role owns repositories, else those it uses (on
        two sites, the roles of the site without the owner make them on their own
        cluster)."""
        retention_ms = int(self.settings.kafka.chunk_retention_hours * 3600 * 1000)
        specs = [
            spec
            for repo, shard_count in shard_counts.items()
            for spec in self.topics.repository_specs(repo, shard_count, retention_ms)
        ]
        await ensure_topics(
            self.bootstrap, specs if self.role in OWNERS else self._used(specs), self.security
        )

    def consumer(self, name: str, group: str | None = None, **kwargs: Any) -> RecordConsumer:
        """A consumer named ``name``; ``group`` joins a consumer group (else assigned)."""
        return RecordConsumer(**self._consumer_options(name, group, kwargs))

    def bulk_consumer(
        self, name: str, group: str | None = None, **kwargs: Any
    ) -> RecordConsumer | NativeConsumer:
        """A consumer of bulk records (chunks, restore streams) through
        ``kafka.bulk_client``; arguments as :meth:`consumer`'s."""
        options = self._consumer_options(name, group, kwargs)
        return NativeConsumer(**options) if self.native_bulk else RecordConsumer(**options)

    def _consumer_options(
        self, name: str, group: str | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        kwargs.setdefault("request_timeout_ms", self.settings.kafka.request_timeout_ms)
        kwargs.setdefault("security", self.security)
        return {
            "bootstrap": self.bootstrap,
            "codec": self.codec,
            "producer": self.producer,
            "dead_letter_topic": self.topics.dead_letter,
            "client_id": f"{self.client_id}-{name}",
            "options": ConsumerOptions(
                group_id=None if group is None else f"{self.topics.prefix}.{group}", **kwargs
            ),
        }

    def mailbox(self, name: str, topic: str, field: str) -> Mailbox:
        return Mailbox(self.consumer(name), topic, field)


class RepositoryDirectory:
    """The repositories announced by their owners on the compacted repositories topic."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._consumer = mesh.consumer("repositories")
        self._topic = mesh.topics.repositories
        self._known: dict[str, RepositoryInfo] = {}
        self._announced = asyncio.Condition()

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.assign_all_from_start(self._topic)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        async for batch in self._consumer.batches(timeout_ms=500):
            announced = [r.value for r in batch if isinstance(r.value, RepositoryInfo)]
            await self._ensure_topics(announced)
            if announced:
                async with self._announced:
                    for info in announced:
                        self._known[info.name] = info
                    self._announced.notify_all()

    async def _ensure_topics(self, announced: list[RepositoryInfo]) -> None:
        """The topics this role uses of repositories newly announced, on its own
        cluster, before they are known: their owner may serve them from another site's
        cluster, whose topics this one has only where they are mirrored."""
        new = {
            info.name: info.shard_count
            for info in announced
            if (known := self._known.get(info.name)) is None
            or known.shard_count != info.shard_count
        }
        if not new:
            return
        try:
            await self._mesh.ensure_repository_topics(new)
        except BlockferryError as exc:
            log.warning("the topics of repositories %s on this cluster: %s", ", ".join(new), exc)

    @property
    def names(self) -> list[str]:
        return sorted(self._known)

    async def get(self, name: str, timeout: float = 10.0) -> RepositoryInfo | None:
        """The announcement of repository ``name``, waiting briefly for it at start-up."""
        try:
            async with self._announced:
                await asyncio.wait_for(
                    self._announced.wait_for(lambda: name in self._known), timeout
                )
        except TimeoutError:
            return None
        return self._known[name]

    def owner(self, name: str) -> str | None:
        """The instance that last announced repository ``name``, if any did."""
        info = self._known.get(name)
        return None if info is None else info.owner

    async def owner_changed(self, name: str, owner: str | None) -> None:
        """Return once repository ``name`` is announced by an instance other than
        ``owner``: the owner restarted (or another took over) and has forgotten the
        commands the previous one was working on."""
        async with self._announced:
            await self._announced.wait_for(lambda: self.owner(name) not in (None, owner))
