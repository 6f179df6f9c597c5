"""What the mesh's Kafka holds for the metrics: each consumer group's lag per topic,
and how many records were set aside on the dead-letter topic. The orchestrator runs it,
as kafka_exporter would, from the committed offsets and the end offsets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import client_options

log = logging.getLogger(__name__)

WATCH_EVERY_S = 15.0
"""How often the offsets are read (a Prometheus scrape interval)."""


@dataclass
class Offsets:
    """One reading: lag by (group, topic), dead letters ever written."""

    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: int | None = None


def group_lag(
    committed: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> dict[str, int]:
    """Records not yet consumed, per topic: end minus committed offset, summed over the
    topic's partitions (a partition committed past its end, as after a topic was made
    again, counts as 0)."""
    lag: dict[str, int] = {}
    for tp, offset in committed.items():
        behind = max(ends.get(tp, offset) - offset, 0)
        lag[tp.topic] = lag.get(tp.topic, 0) + behind
    return lag


class KafkaWatch(Collector):
    """Reads the offsets every :data:`WATCH_EVERY_S` and serves the last reading."""

    def __init__(
        self,
        bootstrap: str,
        security: KafkaSecurity | None,
        prefix: str,
        dead_letter_topic: str,
        registry: CollectorRegistry,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._group_prefix = f"{prefix}."
        self._dead_letter_topic = dead_letter_topic
        self._last = Offsets()
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "blockferry_kafka_consumer_lag_records",
            "Records on a topic that a consumer group has not consumed yet (end offsets"
            " minus committed offsets, summed over the topic's partitions).",
            labels=["group", "topic"],
        )
        for (group, topic), behind in sorted(self._last.lag.items()):
            lag.add_metric([group, topic], behind)
        yield lag
        if self._last.dead_letters is not None:
            letters = CounterMetricFamily(
                "blockferry_kafka_dead_letters",
                "Records set aside on the dead-letter topic (undecodable or refused), as"
                " its end offsets count them.",
            )
            letters.add_metric([], self._last.dead_letters)
            yield letters

    async def run(self) -> None:
        """Read the offsets until cancelled; a failed reading is logged and the last
        one served on (an observer never stops its role)."""
        while True:
            try:
                self._last = await self._read()
            except Exception as exc:  # an observer: its role runs on without it
                log.warning("reading consumer offsets: %s", exc)
            await asyncio.sleep(WATCH_EVERY_S)

    async def _read(self) -> Offsets:
        options = client_options(self._security)
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **options)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, **options
        )
        await admin.start()
        try:
            await consumer.start()
            groups = [
                group
                for group, _ in await admin.list_consumer_groups()
                if group.startswith(self._group_prefix)
            ]
            committed: dict[str, dict[TopicPartition, int]] = {}
            for group in groups:
                offsets = await admin.list_consumer_group_offsets(group)
                committed[group] = {tp: meta.offset for tp, meta in offsets.items()}
            (described,) = await admin.describe_topics([self._dead_letter_topic])
            letters = [
                TopicPartition(self._dead_letter_topic, p["partition"])
                for p in described["partitions"]
            ]
            wanted = {tp for offsets in committed.values() for tp in offsets} | set(letters)
            ends = await consumer.end_offsets(list(wanted)) if wanted else {}
        finally:
            await consumer.stop()
            await admin.close()
        reading = Offsets(dead_letters=sum(ends[tp] for tp in letters) if letters else None)
        for group, offsets in committed.items():
            for topic, behind in group_lag(offsets, ends).items():
                reading.lag[(group.removeprefix(self._group_prefix), topic)] = behind
        return reading
