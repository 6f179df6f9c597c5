"""Consumer lag from committed and end offsets, as the orchestrator reports it."""

from __future__ import annotations

from aiokafka import TopicPartition

from blockferry.transport.kafka_watch import group_lag


def test_lag_is_summed_per_topic_over_its_partitions() -> None:
    committed = {
        TopicPartition("bf.main.chunks", 0): 10,
        TopicPartition("bf.main.chunks", 1): 40,
        TopicPartition("bf.tasks", 0): 7,
    }
    ends = {
        TopicPartition("bf.main.chunks", 0): 25,
        TopicPartition("bf.main.chunks", 1): 40,
        TopicPartition("bf.tasks", 0): 7,
    }
    assert group_lag(committed, ends) == {"bf.main.chunks": 15, "bf.tasks": 0}


def test_an_offset_past_the_end_counts_as_caught_up() -> None:
    """As after a topic was deleted and made again: never a negative lag."""
    tp = TopicPartition("bf.tasks", 0)
    assert group_lag({tp: 100}, {tp: 3}) == {"bf.tasks": 0}
    assert group_lag({tp: 100}, {}) == {"bf.tasks": 0}, "no end known: no lag claimed"
