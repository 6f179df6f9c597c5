"""Bulk records (chunks, restore streams) through librdkafka (confluent-kafka).

The same guarantees as :mod:`.kafka`'s aiokafka client, with the encoding of requests,
the batching, the checksums and TLS done in C, off the interpreter lock: producing is
idempotent with acks from all in-sync replicas and waits out an unavailable cluster
(a record is never given up on for lack of a broker); consumers never commit on their
own, hand rebalances to the role's listener, and dead-letter what cannot be decoded.
Keys go to the partition Kafka's Java client picks (``murmur2_random``), so a digest's
shard is the same as :func:`~blockferry.transport.kafka.shard_of` says.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka import Producer as Client
from confluent_kafka.aio import AIOConsumer

from blockferry.core.errors import TransportError
from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import (
    ConsumerOptions,
    DecodingConsumer,
    Outgoing,
    Partition,
    Producer,
    RawRecord,
    RebalanceListener,
    Record,
    librdkafka_options,
    shard_of,
    waiting,
)
from blockferry.transport.topics import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often the producer's delivery thread looks for acknowledgements."""

CLOSE_FLUSH_S = 30.0
"""How long stopping a producer waits for records still unacknowledged."""

QUEUE_FULL_WAIT_S = 0.005

REBALANCED = (
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
)
"""Commit errors that say the partitions may be another member's now."""


def _log_error(error: KafkaError) -> None:
    """librdkafka's client-wide errors: a broker down is waited out, said once a time."""
    if error.fatal():
        log.error("Kafka client: %s", error.str())
    else:
        log.warning("Kafka client: %s", error.str())


async def _log_error_async(error: KafkaError) -> None:
    """:func:`_log_error` as confluent-kafka's asyncio consumer calls it (awaited)."""
    _log_error(error)


def _common(bootstrap: str, client_id: str, security: KafkaSecurity | None) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "error_cb": _log_error,
        "logger": log,
        **librdkafka_options(security),
    }


class NativeProducer(Producer):
    """Produces records through librdkafka.

    A thread serves delivery reports and settles each record's future on the loop.
    ``message.timeout.ms`` is infinite: while Kafka is unavailable a record waits in the
    client, retried by it, so a delivery failure is always a lasting one (authorization,
    size, a fatal producer error) and raises TransportError.
    """

    def _make_client(
        self, bootstrap: str, request_timeout_ms: int, security: KafkaSecurity | None
    ) -> None:
        self._client = Client(
            {
                **_common(bootstrap, self._client_id, security),
                "acks": "all",
                "enable.idempotence": True,
                "message.max.bytes": MAX_RECORD_BYTES,
                "linger.ms": 5,
                "batch.size": 1024 * 1024,
                "compression.type": "none",
                "request.timeout.ms": request_timeout_ms,
                "message.timeout.ms": 0,
                "partitioner": "murmur2_random",
            }
        )
        self._stopping = threading.Event()
        self._deliveries: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await waiting(f"connecting producer {self._client_id}", self._metadata)
        if self._deliveries is None:  # a role whose start is retried starts it again
            self._stopping.clear()
            self._deliveries = threading.Thread(
                target=self._serve, name=f"deliveries-{self._client_id}", daemon=True
            )
            self._deliveries.start()

    async def _metadata(self) -> None:
        assert self._loop is not None
        await self._loop.run_in_executor(None, lambda: self._client.list_topics(timeout=10))

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._client.poll(POLL_S)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._client.flush, CLOSE_FLUSH_S)
        if left:
            log.warning("%s: %d records not acknowledged when stopping", self._client_id, left)
            self._client.purge()
        self._stopping.set()
        if self._deliveries is not None:
            await loop.run_in_executor(None, self._deliveries.join)
            self._deliveries = None
        self._client.poll(0)  # settles what the purge failed

    async def _send(self, record: Outgoing) -> asyncio.Future[Any]:
        loop = self._loop or asyncio.get_running_loop()
        acked: asyncio.Future[Any] = loop.create_future()

        def delivered(error: KafkaError | None, _record: Message) -> None:
            loop.call_soon_threadsafe(_settle, acked, record.what, error)

        options: dict[str, Any] = {"on_delivery": delivered}
        if record.partition is not None:
            options["partition"] = record.partition
        while True:
            try:
                self._client.produce(record.topic, record.value, record.key, **options)
                return acked
            except BufferError:  # the client's queue is full: wait for acknowledgements
                await asyncio.sleep(QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                raise TransportError(f"{record.what}: {exc.args[0].str()}") from exc

    async def flush(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._client.flush)


def _settle(acked: asyncio.Future[Any], what: str, error: KafkaError | None) -> None:
    if acked.done():  # its sender was cancelled
        return
    if error is None:
        acked.set_result(None)
    else:
        acked.set_exception(TransportError(f"{what}: {error.str()}"))


class NativeConsumer(DecodingConsumer):
    """Consumes and decodes records through librdkafka (the subset of
    :class:`~.kafka.RecordConsumer` bulk records need)."""

    def _make_client(self, bootstrap: str, options: ConsumerOptions) -> None:
        fetch = options.fetch_max_bytes
        self._config = {
            **_common(bootstrap, self._client_id, options.security),
            "error_cb": _log_error_async,
            # librdkafka wants a group even for a consumer that is only assigned; one
            # that never subscribes never joins it, and never commits.
            "group.id": options.group_id or self._client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": options.auto_offset_reset,
            # a record larger than these still comes, alone
            "max.partition.fetch.bytes": min(fetch, MAX_RECORD_BYTES),
            "fetch.max.bytes": fetch,
            "receive.message.max.bytes": max(fetch, MAX_RECORD_BYTES) + 1024 * 1024,
            # what is fetched ahead of the role, whatever the number of partitions
            "queued.max.messages.kbytes": fetch // 1024,
            "queued.min.messages": 1,
            "fetch.queue.backoff.ms": 10,  # how soon a full queue is looked at again
            "max.poll.interval.ms": options.max_poll_interval_ms,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 3000,
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": options.metadata_max_age_ms,
            "check.crcs": options.check_crcs,
            "socket.timeout.ms": options.request_timeout_ms,
            # aiokafka's default, so members of either client can share a group
            "partition.assignment.strategy": "roundrobin",
        }
        self._timeout_s = options.request_timeout_ms / 1000
        self._kafka: AIOConsumer | None = None

    @property
    def _client(self) -> AIOConsumer:
        if self._kafka is None:
            raise TransportError(f"consumer {self._client_id} is not started")
        return self._kafka

    async def start(
        self, topics: Sequence[str] = (), listener: RebalanceListener | None = None
    ) -> None:
        """Connect; subscribe to ``topics`` (none: the consumer is assigned partitions)."""
        self._kafka = AIOConsumer(self._config, max_workers=2)
        await self._waiting("connecting", lambda: self._client.list_topics(timeout=10))
        if not topics:
            return
        callbacks: dict[str, Any] = {}
        if listener is not None:

            async def assigned(_consumer: Any, partitions: list[TopicPartition]) -> None:
                await listener.on_assigned([_ours(tp) for tp in partitions])

            async def revoked(_consumer: Any, partitions: list[TopicPartition]) -> None:
                await listener.on_revoked([_ours(tp) for tp in partitions])

            callbacks = {"on_assign": assigned, "on_revoke": revoked}
        try:
            await self._client.subscribe(list(topics), **callbacks)
        except KafkaException as exc:
            raise TransportError(f"subscribing consumer {self._client_id}: {exc}") from exc

    async def stop(self) -> None:
        if self._kafka is not None:
            await self._kafka.close()
            self._kafka = None

    async def assign_key_from_end(self, topic: str, key: bytes) -> None:
        """Read, from its current end, the one partition of ``topic`` that records keyed
        ``key`` go to: the end is resolved now, so nothing produced after is missed."""
        metadata = await self._waiting(
            f"partitions of {topic}",
            lambda: self._client.list_topics(topic, timeout=self._timeout_s),
        )
        described = metadata.topics.get(topic)
        if described is None or not described.partitions:
            problem = "not found" if described is None else described.error or "no partitions"
            raise TransportError(f"topic {topic}: {problem}")
        tp = TopicPartition(topic, shard_of(key, len(described.partitions)))
        _low, end = await self._waiting(
            f"end of {topic}[{tp.partition}]",
            lambda: self._client.get_watermark_offsets(tp, timeout=self._timeout_s, cached=False),
        )
        await self._client.assign([TopicPartition(topic, tp.partition, end)])

    async def rewind_to_committed(self) -> None:
        """Read every assigned partition again from its committed offset (from its
        beginning where nothing was committed): what was read since is read again."""
        assigned = await self._client.assignment()
        if not assigned:
            return
        committed = await self._waiting(
            "committed offsets",
            lambda: self._client.committed(assigned, timeout=self._timeout_s),
        )
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            await self._waiting(
                f"rewinding {tp.topic}[{tp.partition}]",
                lambda tp=tp, offset=offset: self._client.seek(
                    TopicPartition(tp.topic, tp.partition, offset)
                ),
            )

    async def poll(self, timeout_ms: int = 200, max_records: int = 64) -> list[Record]:
        """The records that arrive within ``timeout_ms``, decoded."""
        # librdkafka waits for ``num_messages`` or the timeout: what is here already is
        # taken at once, and only an empty queue is waited on, for its first record.
        polled = await self._client.consume(num_messages=max_records, timeout=0)
        if not polled:
            polled = await self._client.consume(num_messages=1, timeout=timeout_ms / 1000)
            if polled and max_records > 1:
                polled += await self._client.consume(num_messages=max_records - 1, timeout=0)
        batch: list[Record] = []
        for message in polled:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise TransportError(f"consumer {self._client_id}: {error.str()}")
                log.warning("consumer %s: %s", self._client_id, error.str())
                continue
            raw = RawRecord(
                str(message.topic()),
                int(message.partition() or 0),
                int(message.offset() or 0),
                message.key(),
                message.value(),
            )
            record = await self._decode(raw)
            if record is not None:
                batch.append(record)
        return batch

    async def commit(self, offsets: dict[Partition, int]) -> bool:
        """Commit ``offsets`` (the next offset to read per partition), waiting while Kafka
        is unavailable; False when the group rebalanced meanwhile (see
        :meth:`~.kafka.RecordConsumer.commit`)."""
        if not offsets:
            return True
        theirs = [TopicPartition(p.topic, p.partition, offset) for p, offset in offsets.items()]
        try:
            await self._waiting(
                "committing", lambda: self._client.commit(offsets=theirs, asynchronous=False)
            )
        except TransportError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, KafkaException) and cause.args[0].code() in REBALANCED):
                raise
            log.warning("not committed (%s): %s", self._client_id, cause.args[0].str())
            return False
        return True

    async def _waiting(self, what: str, call: Any) -> Any:
        return await waiting(f"{what} ({self._client_id})", call)


def _ours(tp: TopicPartition) -> Partition:
    return Partition(tp.topic, tp.partition)
