"""Undecodable records go to the dead-letter topic with the reason; the consumer carries on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from blockferry.mesh import Mesh
from blockferry.settings import CommonSettings, KafkaSettings
from blockferry.transport.kafka import (
    DEAD_LETTER_VALUE_BYTES,
    Record,
    RecordConsumer,
    ensure_topics,
)
from blockferry.transport.records import Command, DeadLetter
from blockferry.transport.topics import MAX_RECORD_BYTES, TopicSpec

pytestmark = pytest.mark.kafka

GOOD = Command(command_id="c1", name="describe", arguments=b"")


@contextlib.asynccontextmanager
async def input_and_letters(
    bootstrap: str, prefix: str, name: str, spec: dict[str, str] | None = None
) -> AsyncIterator[tuple[Mesh, str, RecordConsumer, RecordConsumer]]:
    """A started mesh, the input topic ``name`` (created with ``spec``), a group consumer
    subscribed to it and a reader of the dead-letter topic from its start."""
    mesh = Mesh(
        CommonSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)),
        "source-mover",
    )
    await mesh.start()
    topic = f"{prefix}.{name}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, spec or {})])
    consumer = mesh.consumer(name, group=f"dlq-{name}")
    dead = mesh.consumer("dead")
    try:
        await consumer.start([topic])
        await dead.start()
        await dead.assign_all_from_start(mesh.topics.dead_letter)
        yield mesh, topic, consumer, dead
    finally:
        await consumer.stop()
        await dead.stop()
        await mesh.stop()


async def records(consumer: RecordConsumer, count: int) -> list[Record]:
    """The first ``count`` records ``consumer`` delivers (within a minute)."""
    delivered: list[Record] = []
    async with asyncio.timeout(60):
        async for batch in consumer.batches():
            delivered.extend(batch)
            if len(delivered) >= count:
                break
    return delivered


def letter(record: Record) -> DeadLetter:
    assert isinstance(record.value, DeadLetter), record
    return record.value


async def test_bad_records_are_dead_lettered_and_consumption_goes_on(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with input_and_letters(kafka_bootstrap, topic_prefix, "input") as (
        mesh,
        topic,
        consumer,
        dead,
    ):
        raw = mesh.producer._producer
        await raw.send_and_wait(topic, b"plain garbage", key=b"k1")
        await raw.send_and_wait(topic, b"\xc3\x01" + bytes(8) + b"body", key=b"k2")
        malformed = mesh.codec.encode(GOOD)[:-3]
        await raw.send_and_wait(topic, malformed, key=b"k3")
        await mesh.producer.send_and_wait(topic, GOOD, key="k4")

        delivered = await records(consumer, 1)
        assert [(r.value, r.key) for r in delivered] == [(GOOD, b"k4")]

        letters = [letter(r) for r in await records(dead, 3)]
        assert [(d.offset, d.key, d.topic) for d in letters] == [
            (0, b"k1", topic),
            (1, b"k2", topic),
            (2, b"k3", topic),
        ]
        assert "not Avro single-object encoded" in letters[0].reason
        assert "unknown schema fingerprint" in letters[1].reason
        assert "malformed body" in letters[2].reason
        assert letters[2].value == malformed


async def test_an_undecodable_record_at_the_size_limit_is_dead_lettered_bounded(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Set aside whole, a record this large would not fit in its dead letter: producing
    it would fail again on every restart. The letter keeps a prefix, the length and the
    hash of the whole value, and the consumer carries on with the next record."""
    spec = {"max.message.bytes": str(MAX_RECORD_BYTES)}
    async with input_and_letters(kafka_bootstrap, topic_prefix, "large-input", spec) as (
        mesh,
        topic,
        consumer,
        dead,
    ):
        huge = os.urandom(MAX_RECORD_BYTES - 100)  # as large as the topic takes
        await mesh.producer._producer.send_and_wait(topic, huge, key=b"huge")
        await mesh.producer.send_and_wait(topic, GOOD, key="next")

        delivered = await records(consumer, 1)
        assert [(r.name, r.key) for r in delivered] == [("Command", b"next")]

        (only,) = [letter(r) for r in await records(dead, 1)]
        assert (only.topic, only.offset, only.key) == (topic, 0, b"huge")
        assert only.value == huge[:DEAD_LETTER_VALUE_BYTES]
        assert only.value_length == len(huge)
        assert only.value_sha256 == hashlib.sha256(huge).hexdigest()
        assert "not Avro single-object encoded" in only.reason
