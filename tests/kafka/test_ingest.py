"""The target side's chunk intake on a real broker and a real repository: what it stores,
what it sets aside, replays, and a rebalance while a pack is open."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from blockferry.core import blocks
from blockferry.ingest.chunks import ChunkIntake
from blockferry.ingest.config import IngestConfig
from blockferry.ingest.context import IngestContext
from blockferry.ingest.metrics import IngestMetrics
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.settings import BulkClient, CommonSettings, KafkaSettings
from blockferry.transport.codec import signed64
from blockferry.transport.records import Chunk, Command, DeadLetter, Message
from tests.kafka.offsets import committed_and_end

pytestmark = pytest.mark.kafka

REPO = "default"
BLOCK_SIZE = 256 * 1024
SHARDS = 2
WAIT_S = 60.0


@dataclass
class Intake:
    """One target-side instance: its own mesh handle, repository object and metrics."""

    mesh: Mesh
    repo: Repository
    intake: ChunkIntake
    registry: CollectorRegistry
    task: asyncio.Task[None]

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "blockferry_test_chunks_total", {"repository": REPO, "outcome": outcome}
        )
        return value or 0.0

    def taken(self) -> float:
        """Chunks stored or found already stored."""
        return self.count("stored") + self.count("duplicate")


class Harness:
    def __init__(
        self, bootstrap: str, prefix: str, path: Path, clients: tuple[BulkClient, BulkClient]
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.path = path
        self.clients = clients
        """The bulk client of instance "b", and of every other."""
        self.pool = ThreadPoolExecutor(2)
        self.intakes: list[Intake] = []
        self.mesh = self._mesh("producer")

    def _mesh(self, instance: str) -> Mesh:
        settings = CommonSettings(
            kafka=KafkaSettings(
                bootstrap_servers=self.bootstrap,
                topic_prefix=self.prefix,
                bulk_client=self.clients[0] if instance == "b" else self.clients[1],
            ),
            instance=instance,
        )
        return Mesh(settings, "target-mover")

    @property
    def topic(self) -> str:
        return self.mesh.topics.chunks(REPO)

    async def start(self) -> None:
        Repository.init(self.path, block_size=BLOCK_SIZE, shard_count=SHARDS)
        await self.mesh.start()
        await self.mesh.ensure_repository_topics({REPO: SHARDS})

    async def start_intake(self, name: str, config: IngestConfig) -> Intake:
        mesh = self._mesh(name)
        await mesh.start()
        repo = Repository.open(self.path)
        registry = CollectorRegistry()
        metrics = IngestMetrics(registry, "test")
        metrics.for_repository(REPO)
        intake = ChunkIntake(IngestContext(mesh, repo, REPO, config, metrics, self.pool, self.pool))
        await intake.start()
        started = Intake(mesh, repo, intake, registry, asyncio.create_task(intake.run()))
        self.intakes.append(started)
        return started

    async def stop_intake(self, intake: Intake) -> None:
        intake.task.cancel()
        await asyncio.gather(intake.task, return_exceptions=True)
        await intake.intake.stop()
        await intake.mesh.stop()
        self.intakes.remove(intake)

    async def stop(self) -> None:
        for intake in list(self.intakes):
            await self.stop_intake(intake)
        await self.mesh.stop()
        self.pool.shutdown()

    def chunk(self, plain: bytes, compressed: bool = True, **changes: Any) -> Chunk:
        """A Chunk record, as a source mover sends it, with ``changes``."""
        key = Repository.open(self.path).config.dedupe_key
        data = blocks.compress(plain, 3) if compressed else plain
        chunk = Chunk(
            session_id="s1",
            digest=blocks.digest(plain, key),
            compressed=compressed,
            plain_size=len(plain),
            checksum=signed64(blocks.checksum(data)),
            data=data,
        )
        return chunk.model_copy(update=changes)

    async def send(self, message: Message) -> None:
        key = message.digest if isinstance(message, Chunk) else b"not a chunk"
        await self.mesh.producer.send_and_wait(self.topic, message, key=key)

    def stored(self) -> Counter[bytes]:
        """How many times each digest is in a sealed pack, read from disk."""
        repo = Repository.open(self.path)
        return Counter(e.digest for p in repo.sealed_pack_ids() for e in repo.pack_entries(p))

    async def committed_and_end(self) -> tuple[dict[int, int], dict[int, int]]:
        """The target group's committed offsets and the chunk topic's end offsets."""
        group = f"{self.prefix}.{REPO}.target"
        return await committed_and_end(self.bootstrap, group, self.topic, SHARDS)

    async def wait_committed_to_end(self) -> None:
        await until(self.committed_and_end, lambda ce: ce[0] == ce[1], "offsets committed")


async def until(probe: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Poll ``probe`` (sync or async) until ``done`` holds for its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {WAIT_S:.0f} s")
        await asyncio.sleep(0.1)


def plaintext(seed: int) -> bytes:
    """A compressible block, distinct per seed."""
    return (b"block %d " % seed) * 4000 + random.Random(seed).randbytes(64)


@pytest.fixture(
    params=[
        ("librdkafka", "librdkafka"),
        ("aiokafka", "aiokafka"),
        ("aiokafka", "librdkafka"),  # one group, members of both clients
    ],
    ids=["librdkafka", "aiokafka", "mixed"],
)
async def harness(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """Chunk intakes on either bulk client, or instance "b" on aiokafka and the rest on
    librdkafka."""
    h = Harness(kafka_bootstrap, topic_prefix, tmp_path / "repository", request.param)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


async def dead_letters(mesh: Mesh, count: int) -> list[DeadLetter]:
    consumer = mesh.consumer("dead-letters")
    await consumer.start()
    await consumer.assign_all_from_start(mesh.topics.dead_letter)
    letters: list[DeadLetter] = []
    try:
        async with asyncio.timeout(WAIT_S):
            async for batch in consumer.batches():
                letters.extend(r.value for r in batch if isinstance(r.value, DeadLetter))
                if len(letters) >= count:
                    break
    finally:
        await consumer.stop()
    return letters


async def test_good_chunks_are_stored_bad_ones_dead_lettered(harness: Harness) -> None:
    h = harness
    a = await h.start_intake("a", IngestConfig(idle_seal_s=0.2))
    good = h.chunk(plaintext(1))
    bad_checksum = h.chunk(plaintext(2), checksum=12345)
    other = h.chunk(plaintext(4))
    bad_digest = h.chunk(plaintext(3), digest=other.digest)
    command = Command(command_id="c1", name="describe", arguments=b"")
    later = h.chunk(plaintext(5), compressed=False)

    await h.send(good)
    await h.send(bad_checksum)
    await h.send(bad_digest)
    await h.send(command)
    await h.send(later)

    stored = await until(
        h.stored, lambda s: good.digest in s and later.digest in s, "good chunks stored"
    )
    # a pack is sealed before its entries reach the index: read once they are there
    repo = Repository.open(h.path)
    await until(
        lambda: (repo.refresh_index(), repo.locate(good.digest), repo.locate(later.digest)),
        lambda found: None not in found[1:],
        "good chunks in the index",
    )
    assert repo.read_block(good.digest) == blocks.decompress(good.data, BLOCK_SIZE)
    assert repo.read_block(later.digest) == later.data
    assert bad_checksum.digest not in stored
    assert other.digest not in stored, "a digest that does not match is not stored"
    assert set(stored) == {good.digest, later.digest}

    letters = await dead_letters(h.mesh, 3)
    by_key = {d.key: d for d in letters}
    assert set(by_key) == {bad_checksum.digest, other.digest, b"not a chunk"}
    assert all(d.topic == h.topic for d in letters)
    assert "checksum mismatch" in by_key[bad_checksum.digest].reason
    assert "digest does not match its plaintext" in by_key[other.digest].reason
    assert "unexpected Command" in by_key[b"not a chunk"].reason
    assert a.count("rejected") == 2
    assert a.count("stored") == 2
    await h.wait_committed_to_end()


async def test_a_replayed_chunk_changes_nothing(harness: Harness) -> None:
    h = harness
    a = await h.start_intake("a", IngestConfig(idle_seal_s=0.2))
    first = h.chunk(plaintext(1))
    second = h.chunk(plaintext(2))
    await h.send(first)
    await h.send(first)  # replayed at once: still in the open pack
    await h.send(second)
    await until(h.stored, lambda s: len(s) == 2, "both stored")
    await h.wait_committed_to_end()
    packs_before = sorted(Repository.open(h.path).sealed_pack_ids())

    # replayed once sealed, stored the other way (uncompressed): the same digest
    again = h.chunk(plaintext(1), compressed=False)
    assert again.digest == first.digest
    await h.send(first)
    await h.send(again)
    await h.wait_committed_to_end()
    assert sorted(Repository.open(h.path).sealed_pack_ids()) == packs_before
    assert h.stored() == Counter({first.digest: 1, second.digest: 1})
    assert a.count("stored") == 2
    assert a.count("duplicate") == 3


async def test_rebalance_seals_the_open_pack_and_loses_or_doubles_nothing(
    harness: Harness,
) -> None:
    h = harness
    a = await h.start_intake("a", IngestConfig(idle_seal_s=60))
    early = [h.chunk(plaintext(i)) for i in range(12)]
    for fields in early:
        await h.send(fields)
    await until(lambda: a.count("stored"), lambda n: n == len(early), "A took the chunks")
    assert h.stored() == Counter(), "A's packs are open (idle seal is long)"
    assert (await h.committed_and_end())[0] == {0: 0, 1: 0}, "nothing committed while open"

    b = await h.start_intake("b", IngestConfig(idle_seal_s=0.2))
    # B joining revokes A's partitions: A seals its open packs and commits their offsets
    stored = await until(h.stored, lambda s: len(s) == len(early), "A sealed on revocation")
    assert set(stored.values()) == {1}
    await h.wait_committed_to_end()

    # new chunks, then every early chunk again: each instance now owns some partitions
    late = [h.chunk(plaintext(100 + i)) for i in range(12)]
    for fields in late + early:
        await h.send(fields)
    await until(
        lambda: a.taken() + b.taken(),
        lambda taken: taken == len(early) * 2 + len(late),
        "A and B took the chunks",
    )
    await h.stop_intake(a)  # seals A's open pack; B takes over every partition
    everything = {f.digest for f in early + late}
    await until(h.stored, lambda s: set(s) == everything, "late chunks stored")
    await h.wait_committed_to_end()
    await h.stop_intake(b)

    stored = h.stored()
    assert set(stored) == everything
    assert [d.hex() for d, n in stored.items() if n > 1] == [], "a digest is stored once"
    assert a.count("stored") + b.count("stored") == len(everything)
    assert a.count("duplicate") + b.count("duplicate") == len(early)
    repo = Repository.open(h.path)
    for fields in early + late:
        entry = repo.locate(fields.digest)
        assert entry is not None
        assert repo.read_entry(entry) == blocks.decompress(fields.data, BLOCK_SIZE)
