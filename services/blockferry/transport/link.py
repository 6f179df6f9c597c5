"""The link to another site, as MirrorMaker 2's heartbeats show it.

On two sites (:mod:`sites`) MirrorMaker 2 writes a heartbeat a second into the
``heartbeats`` topic of each cluster it writes to, the key naming the flow (source
cluster alias, target alias). MirrorMaker runs on one site, so the heartbeats of the
flow into the other site's cluster cross the link to get there: while they keep
arriving, the link and MirrorMaker work; when none has arrived for :data:`STALE_S`,
the link (or MirrorMaker) is down and whatever crosses it waits. Times are this host's,
when a heartbeat arrived, never the time another host wrote into it. A mesh on one
site has no heartbeats topic, and no link to watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge

from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import client_options

log = logging.getLogger(__name__)

HEARTBEATS_TOPIC = "heartbeats"
"""MirrorMaker 2's, unprefixed."""

STALE_S = 10.0
"""No heartbeat of a site for this long: the link to it is down."""

LOOK_AGAIN_S = 10.0
"""How often to look for the heartbeats topic while there is none (MirrorMaker makes it
when it starts)."""


def source_site(key: bytes) -> str | None:
    """The source cluster alias of a MirrorMaker 2 heartbeat's key (the source and the
    target alias, each a length-prefixed string), or None if it is not one."""
    aliases = []
    offset = 0
    try:
        while offset < len(key):
            (length,) = struct.unpack_from(">h", key, offset)
            if length < 0 or offset + 2 + length > len(key):
                return None
            aliases.append(key[offset + 2 : offset + 2 + length].decode())
            offset += 2 + length
    except (struct.error, UnicodeDecodeError):
        return None
    return aliases[0] if len(aliases) == 2 else None


class LinkWatch:
    """Follows the heartbeats on this role's cluster; :meth:`down` says which sites'
    links are down and for how long."""

    def __init__(
        self, bootstrap: str, security: KafkaSecurity | None, registry: CollectorRegistry
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._arrived: dict[str, float] = {}
        self._age = Gauge(
            "blockferry_orchestrator_link_heartbeat_age_seconds",
            "Seconds since MirrorMaker 2's last heartbeat from each other site arrived on"
            " this cluster (over 10: the link to it is down).",
            ["site"],
            registry=registry,
        )

    def down(self) -> dict[str, float]:
        """Each site whose heartbeats stopped, and the seconds since the last one."""
        now = time.monotonic()
        return {
            site: now - arrived
            for site, arrived in sorted(self._arrived.items())
            if now - arrived > STALE_S
        }

    def waiting(self) -> str:
        """What a session that crosses the link waits for, or empty."""
        return "; ".join(
            f"waiting for the link to site {site} (no MirrorMaker heartbeat for {age:.0f} s)"
            for site, age in self.down().items()
        )

    async def run(self) -> None:
        """Follow the heartbeats until cancelled. Nothing here may stop the role that
        watches: any failure is logged and the watch starts again."""
        while True:
            try:
                await self._follow()
            except Exception as exc:  # an observer: its role runs on without it
                log.warning(
                    "following %s: %s; again in %.0f s", HEARTBEATS_TOPIC, exc, LOOK_AGAIN_S
                )
            await asyncio.sleep(LOOK_AGAIN_S)

    async def _partitions(self) -> list[TopicPartition]:
        """The heartbeats topic's partitions; none while it does not exist."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap, **client_options(self._security)
        )
        await admin.start()
        try:
            (described,) = await admin.describe_topics([HEARTBEATS_TOPIC])
        finally:
            await admin.close()
        if described["error_code"] != 0:
            return []  # one site, or MirrorMaker not started yet
        return [TopicPartition(HEARTBEATS_TOPIC, p["partition"]) for p in described["partitions"]]

    async def _follow(self) -> None:
        assigned = await self._partitions()
        if not assigned:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            **client_options(self._security),
        )
        await consumer.start()
        try:
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        site = source_site(record.key or b"")
                        if site is not None:
                            self._arrived[site] = time.monotonic()
                now = time.monotonic()
                for site, arrived in self._arrived.items():
                    self._age.labels(site).set(now - arrived)
        finally:
            with contextlib.suppress(KafkaError):
                await consumer.stop()
