"""Undecodable records go to the dead-letter topic with the reason; the consumer carries on."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from blockferry.mesh import Mesh
from blockferry.settings import CommonSettings, KafkaSettings
from blockferry.transport.kafka import DEAD_LETTER_VALUE_BYTES, ensure_topics
from blockferry.transport.topics import MAX_RECORD_BYTES, TopicSpec

pytestmark = pytest.mark.kafka


async def test_bad_records_are_dead_lettered_and_consumption_goes_on(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = CommonSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    )
    mesh = Mesh(settings, "test")
    await mesh.start()
    topic = f"{topic_prefix}.input"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1)])
    good = {"command_id": "c1", "name": "describe", "arguments": "{}"}
    raw = mesh.producer._producer
    await raw.send_and_wait(topic, b"plain garbage", key=b"k1")
    await raw.send_and_wait(topic, b"\xc3\x01" + bytes(8) + b"body", key=b"k2")
    malformed = mesh.codec.encode("Command", good)[:-3]
    await raw.send_and_wait(topic, malformed, key=b"k3")
    await mesh.producer.send_and_wait(topic, "Command", good, key="k4")

    consumer = mesh.consumer("input", group="dlq-test")
    await consumer.start([topic])
    dead = mesh.consumer("dead")
    await dead.start()
    await dead.assign_all_from_start(mesh.topics.dead_letter)
    try:
        delivered = []
        async with asyncio.timeout(60):
            async for batch in consumer.batches():
                delivered.extend(batch)
                if delivered:
                    break
        assert [(r.name, r.fields, r.key) for r in delivered] == [("Command", good, b"k4")]

        letters = []
        async with asyncio.timeout(60):
            async for batch in dead.batches():
                letters.extend(r.fields for r in batch)
                if len(letters) >= 3:
                    break
        assert [(d["offset"], d["key"], d["topic"]) for d in letters] == [
            (0, b"k1", topic),
            (1, b"k2", topic),
            (2, b"k3", topic),
        ]
        assert "not Avro single-object encoded" in letters[0]["reason"]
        assert "unknown schema fingerprint" in letters[1]["reason"]
        assert "malformed body" in letters[2]["reason"]
        assert letters[2]["value"] == malformed
    finally:
        await consumer.stop()
        await dead.stop()
        await mesh.stop()


async def test_an_undecodable_record_at_the_size_limit_is_dead_lettered_bounded(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Set aside whole, a record this large would not fit in its dead letter: producing
    it would fail again on every restart. The letter keeps a prefix, the length and the
    hash of the whole value, and the consumer carries on with the next record."""
    settings = CommonSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    )
    mesh = Mesh(settings, "test")
    await mesh.start()
    topic = f"{topic_prefix}.large-input"
    await ensure_topics(
        kafka_bootstrap, [TopicSpec(topic, 1, {"max.message.bytes": str(MAX_RECORD_BYTES)})]
    )
    huge = os.urandom(MAX_RECORD_BYTES - 100)  # as large as the topic takes
    raw = mesh.producer._producer
    await raw.send_and_wait(topic, huge, key=b"huge")
    good = {"command_id": "c1", "name": "describe", "arguments": "{}"}
    await mesh.producer.send_and_wait(topic, "Command", good, key="next")

    consumer = mesh.consumer("large-input", group="dlq-large")
    await consumer.start([topic])
    dead = mesh.consumer("dead")
    await dead.start()
    await dead.assign_all_from_start(mesh.topics.dead_letter)
    try:
        delivered = []
        async with asyncio.timeout(60):
            async for batch in consumer.batches():
                delivered.extend(batch)
                if delivered:
                    break
        assert [(r.name, r.key) for r in delivered] == [("Command", b"next")]

        async with asyncio.timeout(60):
            async for batch in dead.batches():
                if batch:
                    break
        (letter,) = [r.fields for r in batch]
        assert (letter["topic"], letter["offset"], letter["key"]) == (topic, 0, b"huge")
        assert letter["value"] == huge[:DEAD_LETTER_VALUE_BYTES]
        assert letter["value_length"] == len(huge)
        assert letter["value_sha256"] == hashlib.sha256(huge).hexdigest()
        assert "not Avro single-object encoded" in letter["reason"]
    finally:
        await consumer.stop()
        await dead.stop()
        await mesh.stop()
