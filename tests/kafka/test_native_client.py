"""The librdkafka client that carries bulk records, on a real broker: where keyed records
go, large records, the end of a partition taken when assigned, dead letters, and a
lasting delivery failure surfacing instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import pytest

from blockferry.core.errors import TransportError
from blockferry.mesh import Mesh
from blockferry.settings import CommonSettings, KafkaSettings
from blockferry.transport.kafka import ConsumerOptions, Partition, Record, ensure_topics, shard_of
from blockferry.transport.native import NativeConsumer, NativeProducer
from blockferry.transport.records import Chunk, DeadLetter, RestoreEnd
from blockferry.transport.topics import MAX_RECORD_BYTES, TopicSpec

pytestmark = pytest.mark.kafka

PARTITIONS = 4
WAIT_S = 60.0


@contextlib.asynccontextmanager
async def target_mesh(bootstrap: str, prefix: str) -> AsyncIterator[Mesh]:
    """A started mesh of a role that produces bulk records (its bulk producer native)."""
    mesh = Mesh(
        CommonSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)),
        "target-mover",
    )
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.stop()


async def topic(bootstrap: str, name: str, **configs: str) -> str:
    await ensure_topics(bootstrap, [TopicSpec(name, PARTITIONS, configs)])
    return name


async def read(consumer: NativeConsumer, count: int) -> list[Record]:
    records: list[Record] = []
    async with asyncio.timeout(WAIT_S):
        while len(records) < count:
            records += await consumer.poll(timeout_ms=500)
    return records


def chunk(n: int, size: int = 16) -> Chunk:
    return Chunk(
        session_id="s",
        digest=n.to_bytes(32, "big"),
        compressed=False,
        plain_size=size,
        checksum=0,
        data=os.urandom(size),
    )


async def test_the_bulk_producer_is_native_and_keys_go_to_their_shard(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with target_mesh(kafka_bootstrap, topic_prefix) as mesh:
        assert isinstance(mesh.bulk_producer, NativeProducer)
        name = await topic(kafka_bootstrap, f"{topic_prefix}.shards")
        sent = [chunk(n) for n in range(40)]
        for record in sent:
            await mesh.bulk_producer.send(name, record, key=record.digest)
        await mesh.bulk_producer.flush()
        consumer = mesh.bulk_consumer("shards", group="shards")
        assert isinstance(consumer, NativeConsumer)
        await consumer.start([name])
        try:
            got = await read(consumer, len(sent))
        finally:
            await consumer.stop()
    assert sorted(r.key or b"" for r in got) == sorted(c.digest for c in sent)
    for record in got:
        assert record.key is not None
        assert record.partition == shard_of(record.key, PARTITIONS), "Java's partitioner"
    assert {r.partition for r in got} == set(range(PARTITIONS))


async def test_a_record_at_the_size_limit_goes_through_and_garbage_is_dead_lettered(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with target_mesh(kafka_bootstrap, topic_prefix) as mesh:
        name = await topic(
            kafka_bootstrap, f"{topic_prefix}.large", **{"max.message.bytes": str(MAX_RECORD_BYTES)}
        )
        large = chunk(1, MAX_RECORD_BYTES - 64 * 1024)
        await mesh.producer.send_and_wait(name, None, key=b"tombstone")
        await mesh.bulk_producer.send_and_wait(name, large, key=b"k")
        raw = mesh.bulk_consumer("raw", group="raw", check_crcs=False)
        dead = mesh.consumer("dead")
        await raw.start([name])
        await dead.start()
        await dead.assign_all_from_start(mesh.topics.dead_letter)
        try:
            # garbage, produced by a client that does not encode
            await mesh.producer._producer.send_and_wait(name, b"not avro", key=b"g")
            got = await read(raw, 2)
            letters = [
                r.value
                for r in await dead.read_to_end()
                if isinstance(r.value, DeadLetter) and r.value.topic == name
            ]
        finally:
            await raw.stop()
            await dead.stop()
    values = [r.value for r in got]
    assert None in values, "a tombstone is read as one"
    assert [v for v in values if isinstance(v, Chunk)] == [large]
    assert [(d.key, d.value) for d in letters] == [(b"g", b"not avro")]


async def test_a_stream_assigned_from_its_end_misses_nothing_produced_after(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with target_mesh(kafka_bootstrap, topic_prefix) as mesh:
        name = await topic(kafka_bootstrap, f"{topic_prefix}.stream")
        before = RestoreEnd(session_id="s1", blocks_sent=1, attempt_id="before")
        after = RestoreEnd(session_id="s1", blocks_sent=2, attempt_id="after")
        await mesh.bulk_producer.send_and_wait(name, before, key="s1")
        stream = mesh.bulk_consumer("stream")
        await stream.start()
        try:
            assert isinstance(stream, NativeConsumer)
            await stream.assign_key_from_end(name, b"s1")
            await mesh.bulk_producer.send_and_wait(name, after, key="s1")
            got = await read(stream, 1)
            assert [r.value for r in got] == [after]
            assert got[0].source == Partition(name, shard_of(b"s1", PARTITIONS))
        finally:
            await stream.stop()


async def test_a_record_the_topic_refuses_fails_its_send_instead_of_waiting(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with target_mesh(kafka_bootstrap, topic_prefix) as mesh:
        small = {"max.message.bytes": "4096"}
        name = await topic(kafka_bootstrap, f"{topic_prefix}.small", **small)
        ack = await mesh.bulk_producer.send(name, chunk(2, 64 * 1024), key=b"k")
        with pytest.raises(TransportError, match=f"producing Chunk to {name}"):
            await asyncio.wait_for(ack, WAIT_S)
        await mesh.bulk_producer.send_and_wait(name, chunk(3), key=b"k")  # it goes on


async def test_a_producer_started_again_goes_on_delivering(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A role whose start failed later on (a topic not described yet) is started again
    whole, its mesh and producers with it."""
    async with target_mesh(kafka_bootstrap, topic_prefix) as mesh:
        await mesh.start()
        name = await topic(kafka_bootstrap, f"{topic_prefix}.again")
        await asyncio.wait_for(mesh.bulk_producer.send_and_wait(name, chunk(4), key=b"k"), WAIT_S)


async def test_a_broker_that_cannot_be_reached_is_waited_out_not_raised(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A client-wide error (here a listed broker refusing connections, as a node down
    does) is logged; the consumer reads on."""
    async with target_mesh(kafka_bootstrap, topic_prefix) as mesh:
        name = await topic(kafka_bootstrap, f"{topic_prefix}.down")
        consumer = NativeConsumer(
            f"127.0.0.1:{free_port()},{kafka_bootstrap}",
            mesh.codec,
            mesh.producer,
            mesh.topics.dead_letter,
            "refused-once",
            ConsumerOptions(group_id=f"{topic_prefix}.down"),
        )
        await consumer.start([name])
        try:
            await mesh.bulk_producer.send_and_wait(name, chunk(5), key=b"k")
            got = await read(consumer, 1)
        finally:
            await consumer.stop()
    assert [(r.key, isinstance(r.value, Chunk)) for r in got] == [(b"k", True)]


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
