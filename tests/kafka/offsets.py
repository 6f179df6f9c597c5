"""Reading a consumer group's committed offsets and a topic's end offsets in tests."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def committed_and_end(
    bootstrap: str, group: str, topic: str, partitions: int
) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and the topic's end offsets, by partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        end = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) or 0 for tp in tps}
        return committed, {tp.partition: offset for tp, offset in end.items()}
    finally:
        await consumer.stop()
