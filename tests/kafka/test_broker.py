"""Smoke test of the real Kafka broker (compose/local/kafka.sh) through aiokafka."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka

MiB = 1024 * 1024


async def test_large_record_round_trip(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.broker-smoke"

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        assert [e[1] for e in resp.topic_errors] == [0], resp
        (desc,) = await admin.describe_topics([topic])
        assert desc["error_code"] == 0
        assert len(desc["partitions"]) == 3
    finally:
        await admin.close()

    # 4 MiB of incompressible bytes: above every client/broker 1 MiB default.
    payload = os.urandom(4 * MiB)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        max_request_size=16 * MiB,
        compression_type=None,
        acks="all",
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, payload, key=b"chunk-0", partition=2)
    finally:
        await producer.stop()
    assert meta.partition == 2

    # Through a consumer group, so the group coordinator (__consumer_offsets) is exercised.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}.smoke",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * MiB,
        fetch_max_bytes=32 * MiB,
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=60)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert (msg.topic, msg.partition, msg.offset) == (topic, 2, meta.offset)
    assert msg.key == b"chunk-0"
    assert len(msg.value) == len(payload)
    assert msg.value == payload
