"""The dedupe-index role on a real broker: it rebuilds its shards from the index
changelog, answers batched lookups, splits the shards with a second instance and
answers as one would, hands shards over when an instance leaves, and an asker
that gets no answer in time treats its digests as unknown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blockferry.core import blocks
from blockferry.dedupe_index.service import DedupeIndex
from blockferry.dedupe_index.settings import DedupeIndexSettings
from blockferry.mesh import Mesh
from blockferry.settings import CommonSettings, KafkaSettings
from blockferry.source_mover.lookups import GlobalLookup
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.transport.kafka import shard_of
from blockferry.transport.records import IndexEntry

pytestmark = pytest.mark.kafka

REPO = "default"
SHARDS = 4
KEY = b"k" * 32
WAIT_S = 60.0


def digest(n: int) -> bytes:
    return blocks.digest(n.to_bytes(8, "big"), KEY)


@dataclass
class Instance:
    index: DedupeIndex
    registry: CollectorRegistry
    task: asyncio.Task[None]

    def shards(self) -> float:
        return self.registry.get_sample_value("blockferry_dedupe_index_shards") or 0.0

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.index.stop()


@dataclass
class Asker:
    mesh: Mesh
    lookup: GlobalLookup


@asynccontextmanager
async def asker(bootstrap: str, prefix: str, timeout_s: float = 5.0) -> AsyncIterator[Asker]:
    """A source mover's lookup client, with the repository's topics created as its
    owner creates them."""
    settings = CommonSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix))
    await Mesh(settings, "target-mover").ensure_repository_topics({REPO: SHARDS})
    mesh = Mesh(settings, "source-mover")
    await mesh.start()
    replies = mesh.mailbox("replies", mesh.topics.lookup_replies(REPO), "correlation_id")
    await replies.start()
    reading = asyncio.create_task(replies.run())
    metrics = SourceMoverMetrics(CollectorRegistry())
    lookup = GlobalLookup(mesh, REPO, SHARDS, replies, "s/d/lookups", timeout_s, 0.0, metrics)
    try:
        async with lookup:
            yield Asker(mesh, lookup)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await replies.stop()
        await mesh.stop()


async def publish(mesh: Mesh, numbers: range, tombstones: range = range(0)) -> None:
    """Index entries for ``numbers``' digests, then tombstones for ``tombstones``'."""
    for n in numbers:
        d = digest(n)
        entry = IndexEntry(
            digest=d,
            pack_id="p" * 32,
            offset=16 * n,
            stored_size=10,
            plain_size=20,
            compressed=True,
        )
        await mesh.producer.send_and_wait(mesh.topics.index(REPO), entry, key=d)
    for n in tombstones:
        await mesh.producer.send_and_wait(mesh.topics.index(REPO), None, key=digest(n))


class Fleet:
    def __init__(self, bootstrap: str, prefix: str, tmp_path: Path) -> None:
        self.bootstrap, self.prefix, self.tmp_path = bootstrap, prefix, tmp_path
        self.instances: list[Instance] = []

    async def start(self, name: str) -> Instance:
        settings = DedupeIndexSettings(
            kafka=KafkaSettings(bootstrap_servers=self.bootstrap, topic_prefix=self.prefix),
            data_dir=self.tmp_path / name,
            instance=name,
        )
        registry = CollectorRegistry()
        index = DedupeIndex(settings, registry)
        await index.start()
        instance = Instance(index, registry, asyncio.create_task(index.run()))
        self.instances.append(instance)
        return instance

    async def close(self) -> None:
        for instance in self.instances:
            if not instance.task.done():
                await instance.stop()


@pytest.fixture
async def fleet(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        yield f
    finally:
        await f.close()


async def until(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"not within {WAIT_S} s: {what}")


async def answers(lookup: GlobalLookup, asked: list[bytes], expected: set[bytes]) -> None:
    """Ask until the index answers ``expected`` (it may still be catching up)."""
    got: set[bytes] = set()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = await lookup.known(asked)
        if got == expected:
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"index answered {len(got)} known of {len(asked)}, expected {len(expected)}")


async def test_one_instance_answers_from_the_changelog(
    fleet: Fleet, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with asker(kafka_bootstrap, topic_prefix) as ask:
        await publish(ask.mesh, range(200), tombstones=range(150, 200))
        first = await fleet.start("a")
        await until(lambda: first.index.ready, "the instance is ready")
        assert first.shards() == SHARDS, "ready means it joined and holds the shards"
        asked = [digest(n) for n in range(0, 400, 2)]  # half of them never stored
        await answers(ask.lookup, asked, {digest(n) for n in range(0, 150, 2)})
        assert {shard_of(d, SHARDS) for d in asked} == set(range(SHARDS)), "every shard asked"

        await publish(ask.mesh, range(300, 310))
        await answers(ask.lookup, [digest(305), digest(999)], {digest(305)})


async def test_two_instances_split_the_shards_and_hand_them_over(
    fleet: Fleet, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with asker(kafka_bootstrap, topic_prefix) as ask:
        await publish(ask.mesh, range(300))
        a = await fleet.start("a")
        b = await fleet.start("b")
        await until(
            lambda: a.shards() > 0 and b.shards() > 0 and a.shards() + b.shards() == SHARDS,
            "two instances split the shards",
        )
        asked = [digest(n) for n in range(0, 600, 3)]
        expected = {digest(n) for n in range(0, 300, 3)}
        await answers(ask.lookup, asked, expected)

        await a.stop()  # leaves the group: b takes every shard and reads a's from the changelog
        await until(lambda: b.shards() == SHARDS, "the survivor holds every shard")
        await publish(ask.mesh, range(300, 320))
        expected |= {digest(n) for n in range(300, 320, 3)}
        await answers(ask.lookup, [*asked, digest(310)], expected | {digest(310)})
        answered = b.registry.get_sample_value(
            "blockferry_dedupe_index_lookups_total", {"outcome": "answered"}
        )
        assert answered and answered > 0


async def test_an_unanswered_lookup_counts_as_unknown(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with asker(kafka_bootstrap, topic_prefix, timeout_s=0.5) as ask:
        await publish(ask.mesh, range(10))
        started = time.monotonic()
        assert await ask.lookup.known([digest(n) for n in range(10)]) == set()  # no index runs
        assert time.monotonic() - started < 5.0
