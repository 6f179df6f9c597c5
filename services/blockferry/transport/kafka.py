"""Producing and consuming blockferry records on Kafka.

Two clients carry records: aiokafka here (the control plane, and every topic where
``kafka.bulk_client`` is ``aiokafka``) and librdkafka in :mod:`.native` (the bulk
records: chunks and restore streams). Roles see this package's types (:class:`Record`,
:class:`Partition`, :class:`RebalanceListener`, :class:`Producer`), never a client's.
Consumers never commit on their own: a role commits after the effect of a record is
durable. A record that cannot be decoded goes to the dead-letter topic with the
reason, and the consumer carries on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CommitFailedError,
    CoordinatorNotAvailableError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    NotCoordinatorForGroupError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError as NativeError
from confluent_kafka import KafkaException

from blockferry.core.errors import ConfigError, RecordError, TopicConfigError, TransportError
from blockferry.settings import KafkaSecurity
from blockferry.transport.codec import Codec
from blockferry.transport.records import DeadLetter, Message
from blockferry.transport.topics import (
    CHECKED_CONFIGS,
    MAX_RECORD_BYTES,
    TopicSpec,
    TopicState,
    min_isr_for,
    replication_for,
    topic_problems,
)

log = logging.getLogger(__name__)

DEAD_LETTER_VALUE_BYTES = 64 * 1024
"""How much of a record's key and value a dead letter keeps: a record near the size limit
kept whole would not fit in its letter, and producing the letter would fail on every
restart of its consumer. The value's full length and hash are kept besides."""

DEFAULT_REQUEST_TIMEOUT_MS = 60000
"""How long a produce or fetch request may take before the client gives up on it."""

UNAVAILABLE = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    NotEnoughReplicasError,
    NotEnoughReplicasAfterAppendError,
    CoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
)
"""Errors that say Kafka cannot take a request now (no broker reachable, a leader being
elected, too few in-sync replicas, a timeout), not that the request is wrong: these are
waited out, every other error is raised."""

NATIVE_UNAVAILABLE = (
    NativeError._TRANSPORT,
    NativeError._TIMED_OUT,
    NativeError._ALL_BROKERS_DOWN,
    NativeError._WAIT_COORD,
    NativeError.LEADER_NOT_AVAILABLE,
    NativeError.NOT_COORDINATOR,
    NativeError.COORDINATOR_NOT_AVAILABLE,
    NativeError.COORDINATOR_LOAD_IN_PROGRESS,
    NativeError.REQUEST_TIMED_OUT,
)
"""librdkafka's codes for the same conditions (besides the errors it marks retriable)."""

WAIT_FIRST_S = 0.5
WAIT_MOST_S = 10.0

T = TypeVar("T")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (of either client) says Kafka is unavailable for now (see
    :data:`UNAVAILABLE` and :data:`NATIVE_UNAVAILABLE`)."""
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        return isinstance(error, NativeError) and (
            error.retriable() or error.code() in NATIVE_UNAVAILABLE
        )
    return isinstance(exc, UNAVAILABLE)


async def waiting(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, called again (backing off, with a warning each time) for as long as
    Kafka is unavailable: a role waits for its cluster rather than exiting.

    Raises:
        TransportError: any other Kafka error, saying ``what`` was being done.
    """
    delay, since = WAIT_FIRST_S, None
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await call()
        except (KafkaError, KafkaException) as exc:
            if not is_unavailable(exc):
                raise TransportError(f"{what}: {exc}") from exc
            since = loop.time() if since is None else since
            log.warning(
                "%s: Kafka unavailable (%s: %s); waited %.0f s, trying again in %.1f s",
                what,
                type(exc).__name__,
                exc,
                loop.time() - since,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, WAIT_MOST_S)


class Partition(NamedTuple):
    """One partition of a topic."""

    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    """A decoded record with where it was read; ``value`` None is a tombstone."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Message | None

    @property
    def name(self) -> str:
        """The record's type (Tombstone for a tombstone)."""
        return "Tombstone" if self.value is None else type(self.value).__name__

    @property
    def source(self) -> Partition:
        """The partition the record was read from."""
        return Partition(self.topic, self.partition)


class RebalanceListener(Protocol):
    """Told when the group takes partitions from a consumer or gives it some."""

    async def on_revoked(self, revoked: list[Partition]) -> None:
        """Before the partitions go: finish their work and commit it."""

    async def on_assigned(self, assigned: list[Partition]) -> None:
        """The partitions now read by this consumer."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._listener.on_revoked([_ours(tp) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._listener.on_assigned([_ours(tp) for tp in assigned])


def _ours(tp: TopicPartition) -> Partition:
    return Partition(tp.topic, tp.partition)


def _theirs(partition: Partition) -> TopicPartition:
    return TopicPartition(partition.topic, partition.partition)


def shard_of(digest: bytes, shard_count: int) -> int:
    """The shard (partition of chunks, index and lookups) a digest belongs to: the
    partition Kafka's default partitioner picks for the digest as key."""
    return int(murmur2(digest) & 0x7FFFFFFF) % shard_count


def client_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """The client settings that authenticate to Kafka and encrypt the connection as
    ``security`` says (none: plaintext). Secrets are read from their files now, so a
    client made after a secret file changed uses the new secret."""
    if security is None or security.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.protocol.endswith("SSL"):
        context = create_ssl_context(
            cafile=security.ca_file and str(security.ca_file),
            certfile=security.cert_file and str(security.cert_file),
            keyfile=security.key_file and str(security.key_file),
        )
        context.check_hostname = security.check_hostname
        options["ssl_context"] = context
    if security.protocol.startswith("SASL"):
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.username,
            "sasl_plain_password": _password(security),
        }
    return options


def librdkafka_options(security: KafkaSecurity | None) -> dict[str, str]:
    """:func:`client_options` as a librdkafka client (confluent-kafka) takes them."""
    if security is None or security.protocol == "PLAINTEXT":
        return {}
    options: dict[str, str] = {"security.protocol": security.protocol}
    if security.protocol.endswith("SSL"):
        files = {
            "ssl.ca.location": security.ca_file,
            "ssl.certificate.location": security.cert_file,
            "ssl.key.location": security.key_file,
        }
        options |= {name: str(path) for name, path in files.items() if path is not None}
        if not security.check_hostname:
            options["ssl.endpoint.identification.algorithm"] = "none"
    if security.protocol.startswith("SASL"):
        options |= {
            "sasl.mechanisms": security.sasl_mechanism,
            "sasl.username": security.username,
            "sasl.password": _password(security),
        }
    return options


def _password(security: KafkaSecurity) -> str:
    """The SASL password, read from its file now."""
    assert security.password_file is not None  # the settings require it
    try:
        return security.password_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"reading the Kafka password file {security.password_file}: {exc.strerror}"
        ) from exc


async def ensure_topics(
    bootstrap: str, specs: Sequence[TopicSpec], security: KafkaSecurity | None = None
) -> None:
    """Create the topics that do not exist yet, then check every one of ``specs``,
    existing ones included: replication, min.insync.replicas, the cleanup policy of
    compacted topics and ``max.message.bytes`` of those carrying large records.

    Raises:
        TopicConfigError: a topic is set up wrongly; the message names the topic, the
            setting, what it is, what it must be and how to fix it.
        TransportError: Kafka cannot be reached or refused to create a topic.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=30000, **client_options(security)
    )
    try:
        await admin.start()
        brokers = len((await admin.describe_cluster())["brokers"])
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            await _create_topics(admin, missing, replication_for(brokers))
        states = await _describe_topics(admin, [s.name for s in specs])
    except KafkaError as exc:
        raise TransportError(f"creating topics on {bootstrap}: {exc}") from exc
    finally:
        await admin.close()
    problems = [p for s in specs for p in topic_problems(s, states[s.name], brokers)]
    if problems:
        raise TopicConfigError("; ".join(str(p) for p in problems))


async def _create_topics(
    admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], replication: int
) -> None:
    new = [
        NewTopic(
            s.name,
            s.partitions,
            replication,
            topic_configs={"min.insync.replicas": str(min_isr_for(replication)), **s.configs},
        )
        for s in specs
    ]
    response = (await admin.create_topics(new)).to_object()
    for result in response["topic_errors"]:
        code = result["error_code"]
        if code not in (0, TopicAlreadyExistsError.errno):
            raise TransportError(
                f"creating topic {result['topic']}: {result['error_message'] or code}"
            )


async def _describe_topics(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0
) -> dict[str, TopicState]:
    """Replication and checked configs of ``names``, waiting (bounded) for topics just
    created to show in the metadata."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(names)
        replication = {
            t["topic"]: min((len(p["replicas"]) for p in t["partitions"]), default=0)
            for t in described
            if t["error_code"] == 0 and t["partitions"]
        }
        waiting = [name for name in names if name not in replication]
        if not waiting:
            break
        if loop.time() > deadline:
            raise TransportError(f"describing topics: {', '.join(waiting)} not found")
        await asyncio.sleep(0.5)
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(CHECKED_CONFIGS))
        for name in names
    ]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise TransportError(
                    f"describing topic {resource['resource_name']}: "
                    f"{resource['error_message'] or resource['error_code']}"
                )
            configs[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] or ""
                for entry in resource["config_entries"]
            }
    return {name: TopicState(name, replication[name], configs.get(name, {})) for name in names}


class Outgoing(NamedTuple):
    """An encoded record to produce, and what producing it is, for errors."""

    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    what: str


class Producer:
    """Encodes and produces records, idempotent, with acks from all in-sync replicas:
    the base of :class:`RecordProducer` (aiokafka) and librdkafka's
    :class:`~blockferry.transport.native.NativeProducer` (bulk records). A subclass
    makes its client in :meth:`_make_client` and queues records in :meth:`_send`."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        client_id: str,
        request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.codec = codec
        self._client_id = client_id
        self._make_client(bootstrap, request_timeout_ms, security)

    def _make_client(
        self, bootstrap: str, request_timeout_ms: int, security: KafkaSecurity | None
    ) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until every record queued so far is acknowledged."""
        raise NotImplementedError

    async def send(
        self,
        topic: str,
        message: Message | None,
        key: bytes | str | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a record (``message`` None is a tombstone); await the result for its ack
        (it raises TransportError for a failure other than Kafka being unavailable)."""
        value = None if message is None else self.codec.encode(message)
        what = f"producing {type(message).__name__ if message else 'a tombstone'} to {topic}"
        return await self._send(Outgoing(topic, value, record_key(key), partition, what))

    async def _send(self, record: Outgoing) -> asyncio.Future[Any]:
        raise NotImplementedError

    async def send_encoded(self, topic: str, value: bytes, key: bytes | str) -> None:
        """Produce ``value``, already encoded (in a schema registry's wire format), and
        wait until the broker acknowledged it."""
        what = f"producing an encoded record to {topic}"
        await (await self._send(Outgoing(topic, value, record_key(key), None, what)))

    async def send_and_wait(
        self, topic: str, message: Message | None, key: bytes | str | None = None
    ) -> None:
        """Produce a record and wait until the broker acknowledged it."""
        await (await self.send(topic, message, key))


def record_key(key: bytes | str | None) -> bytes | None:
    """A record key as bytes (a string key is UTF-8)."""
    return key.encode() if isinstance(key, str) else key


class RecordProducer(Producer):
    """Produces records through aiokafka.

    While Kafka is unavailable (see :data:`UNAVAILABLE`) sending waits and tries again
    rather than failing: a record whose delivery failed so is sent again, after records
    sent since (consumers are idempotent and do not rely on order across a retry).
    """

    def _make_client(
        self, bootstrap: str, request_timeout_ms: int, security: KafkaSecurity | None
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_RECORD_BYTES,
            linger_ms=5,
            max_batch_size=1024 * 1024,
            request_timeout_ms=request_timeout_ms,
            **client_options(security),
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise TransportError(f"connecting producer: {exc}") from exc

    async def stop(self) -> None:
        await self._producer.stop()

    async def _send(self, record: Outgoing) -> asyncio.Future[Any]:
        what = record.what

        async def enqueue() -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = await self._producer.send(
                record.topic, record.value, key=record.key, partition=record.partition
            )
            return future

        async def acked(future: asyncio.Future[Any]) -> Any:
            while True:
                try:
                    return await future
                except KafkaError as exc:
                    if not is_unavailable(exc):
                        raise TransportError(f"{what}: {exc}") from exc
                    log.warning(
                        "%s: not delivered (%s: %s); sending again", what, type(exc).__name__, exc
                    )
                    await asyncio.sleep(WAIT_FIRST_S)
                future = await waiting(what, enqueue)

        return asyncio.ensure_future(acked(await waiting(what, enqueue)))

    async def partitions_for(self, topic: str) -> set[int]:
        return set(
            await waiting(f"partitions of {topic}", lambda: self._producer.partitions_for(topic))
        )

    async def flush(self) -> None:
        await self._producer.flush()


class RawRecord(NamedTuple):
    """A record as a client read it, not decoded yet."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class ConsumerOptions:
    """How a consumer of either client reads.

    Args:
        group_id: the consumer group, or None for a consumer that is assigned
            partitions itself (and never commits).
        check_crcs: verify Kafka's CRC of each batch; off only for records that carry
            their own checksum over their payload (chunks, restore blocks).
        fetch_max_bytes: the most one fetch brings (a record larger than this still
            comes, alone), and what the consumer keeps fetched ahead: beyond the
            records handed out, what it holds.
    """

    group_id: str | None = None
    auto_offset_reset: str = "earliest"
    max_poll_interval_ms: int = 300000
    metadata_max_age_ms: int = 300000
    check_crcs: bool = True
    fetch_max_bytes: int = 4 * MAX_RECORD_BYTES
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS
    security: KafkaSecurity | None = None


class DecodingConsumer:
    """What both clients' consumers share: decoding, and setting aside on the
    dead-letter topic what cannot be decoded or is refused. A subclass makes its
    client in :meth:`_make_client`."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        producer: Producer,
        dead_letter_topic: str,
        client_id: str,
        options: ConsumerOptions | None = None,
    ) -> None:
        self.codec = codec
        self._producer = producer
        self._dead_letter_topic = dead_letter_topic
        self._client_id = client_id
        self._make_client(bootstrap, options or ConsumerOptions())

    def _make_client(self, bootstrap: str, options: ConsumerOptions) -> None:
        raise NotImplementedError

    async def poll(self, timeout_ms: int = 200, max_records: int = 64) -> list[Record]:
        """The records that arrive within ``timeout_ms``, decoded."""
        raise NotImplementedError

    async def batches(
        self, timeout_ms: int = 200, max_records: int = 64
    ) -> AsyncIterator[list[Record]]:
        """Yield decoded batches (possibly empty, so callers can do timed work)."""
        while True:
            yield await self.poll(timeout_ms, max_records)

    async def _decode(self, raw: RawRecord) -> Record | None:
        value = None
        if raw.value is not None:
            try:
                value = self.codec.decode(raw.value)
            except RecordError as exc:
                await self.dead_letter(raw, str(exc))
                return None
        return Record(raw.topic, raw.partition, raw.offset, raw.key, value)

    async def dead_letter(self, message: RawRecord | Record, reason: str) -> None:
        """Set a record aside on the dead-letter topic with the reason."""
        value = message.value
        if isinstance(value, Message):  # decoded, then refused: encoded again
            value = self.codec.encode(value)
        key = message.key
        log.warning(
            "dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
        )
        if key is not None and len(key) > DEAD_LETTER_VALUE_BYTES:
            reason += f" (key of {len(key)} bytes cut to {DEAD_LETTER_VALUE_BYTES})"
            key = key[:DEAD_LETTER_VALUE_BYTES]
        letter = DeadLetter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            value=None if value is None else value[:DEAD_LETTER_VALUE_BYTES],
            value_length=-1 if value is None else len(value),
            value_sha256="" if value is None else hashlib.sha256(value).hexdigest(),
            reason=reason,
            consumer=self._client_id,
        )
        await self._producer.send_and_wait(self._dead_letter_topic, letter, key=message.topic)


class RecordConsumer(DecodingConsumer):
    """Consumes and decodes records through aiokafka; undecodable ones go to the
    dead-letter topic."""

    def _make_client(self, bootstrap: str, options: ConsumerOptions) -> None:
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=self._client_id,
            group_id=options.group_id,
            enable_auto_commit=False,
            auto_offset_reset=options.auto_offset_reset,
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            fetch_max_bytes=options.fetch_max_bytes,
            max_poll_interval_ms=options.max_poll_interval_ms,
            session_timeout_ms=10000,
            heartbeat_interval_ms=3000,
            isolation_level="read_committed",
            metadata_max_age_ms=options.metadata_max_age_ms,
            check_crcs=options.check_crcs,
            request_timeout_ms=options.request_timeout_ms,
            **client_options(options.security),
        )

    async def start(
        self,
        topics: Sequence[str] = (),
        listener: RebalanceListener | None = None,
        pattern: str | None = None,
    ) -> None:
        """Connect; subscribe to ``topics``, or to every topic matching ``pattern``."""
        told = None if listener is None else _Listener(listener)
        try:
            if topics:
                self._kafka.subscribe(list(topics), listener=told)
            elif pattern is not None:
                self._kafka.subscribe(pattern=pattern, listener=told)
        except KafkaError as exc:
            raise TransportError(f"subscribing consumer {self._client_id}: {exc}") from exc
        await waiting(f"connecting consumer {self._client_id}", self._kafka.start)

    async def assign_all_from_end(self, topic: str) -> None:
        """Read every partition of ``topic`` from its current end (for replies)."""
        tps = await self._assign_all(topic)
        await self._waiting("seeking", lambda: self._kafka.seek_to_end(*tps))
        for tp in tps:  # resolve positions now, so nothing produced after this is missed
            await self._position(tp)

    async def assign_key_from_end(self, topic: str, key: bytes) -> None:
        """Read, from its current end, the one partition of ``topic`` that records keyed
        ``key`` go to (Kafka's default partitioner)."""
        partitions = self._kafka.partitions_for_topic(topic)
        if not partitions:
            await self._kafka._client.force_metadata_update()
            partitions = self._kafka.partitions_for_topic(topic) or {0}
        tp = TopicPartition(topic, shard_of(key, len(partitions)))
        self._kafka.assign([tp])
        await self._waiting("seeking", lambda: self._kafka.seek_to_end(tp))
        await self._position(tp)  # resolved now: nothing produced after is missed

    async def assign_all_from_start(self, topic: str) -> None:
        """Read every partition of ``topic`` from its beginning (for compacted state)."""
        tps = await self._assign_all(topic)
        await self._waiting("seeking", lambda: self._kafka.seek_to_beginning(*tps))

    async def read_to_end(self) -> list[Record]:
        """The records from the assigned partitions' positions to their current ends (a
        compacted topic's state, read before serving from it)."""
        partitions = list(self._kafka.assignment())
        ends = await self._waiting("end offsets", lambda: self._kafka.end_offsets(partitions))
        records: list[Record] = []
        while [tp for tp in partitions if await self._position(tp) < ends[tp]]:
            records += await self.poll(timeout_ms=200, max_records=500)
        return records

    async def read_from(self, partition: Partition, offset: int | None = None) -> None:
        """Read only ``partition``, from ``offset`` (None: its beginning)."""
        tp = _theirs(partition)
        self._kafka.assign([tp])
        if offset is None:
            await self._waiting("seeking", lambda: self._kafka.seek_to_beginning(tp))
        else:
            self._kafka.seek(tp, offset)

    def assign(self, partitions: Sequence[Partition]) -> None:
        """Read exactly ``partitions`` (no group), each from where :meth:`seek` puts it."""
        self._kafka.assign([_theirs(p) for p in partitions])

    def seek(self, partition: Partition, offset: int) -> None:
        """Read ``partition`` (assigned) on from ``offset``."""
        self._kafka.seek(_theirs(partition), offset)

    def assignment(self) -> set[Partition]:
        """The partitions this consumer reads now."""
        return {_ours(tp) for tp in self._kafka.assignment()}

    def subscription(self) -> set[str]:
        """The topics the group consumer is subscribed to (pattern matches included)."""
        return set(self._kafka.subscription())

    def pause(self, partitions: Iterable[Partition]) -> None:
        """Fetch nothing more from ``partitions`` until :meth:`resume`."""
        self._kafka.pause(*(_theirs(p) for p in partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._kafka.resume(*(_theirs(p) for p in partitions))

    async def position(self, partition: Partition) -> int:
        """The offset of the next record read from ``partition``."""
        return await self._position(_theirs(partition))

    async def beginning_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        tps = [_theirs(p) for p in partitions]
        found = await self._waiting("first offsets", lambda: self._kafka.beginning_offsets(tps))
        return {_ours(tp): offset for tp, offset in found.items()}

    async def end_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        tps = [_theirs(p) for p in partitions]
        found = await self._waiting("end offsets", lambda: self._kafka.end_offsets(tps))
        return {_ours(tp): offset for tp, offset in found.items()}

    async def rewind_to_committed(self) -> None:
        """Read every assigned partition again from its committed offset (from its
        beginning where nothing was committed): what was read since is read again."""

        async def rewind(tp: TopicPartition) -> None:
            committed = await self._kafka.committed(tp)
            if committed is None:
                await self._kafka.seek_to_beginning(tp)
            else:
                self._kafka.seek(tp, committed)

        for tp in self._kafka.assignment():
            await self._waiting(f"rewinding {tp}", functools.partial(rewind, tp))

    async def _assign_all(self, topic: str) -> list[TopicPartition]:
        partitions = self._kafka.partitions_for_topic(topic)
        if not partitions:
            await self._kafka._client.force_metadata_update()
            partitions = self._kafka.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._kafka.assign(tps)
        return tps

    async def _waiting(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await waiting(f"{what} ({self._client_id})", call)

    async def _position(self, tp: TopicPartition) -> int:
        return await self._waiting(f"position of {tp}", lambda: self._kafka.position(tp))

    async def stop(self) -> None:
        await self._kafka.stop()

    async def poll(self, timeout_ms: int = 200, max_records: int = 64) -> list[Record]:
        """The records that arrive within ``timeout_ms``, decoded."""
        polled = await self._waiting(
            "consuming",
            lambda: self._kafka.getmany(timeout_ms=timeout_ms, max_records=max_records),
        )
        batch: list[Record] = []
        for messages in polled.values():
            for m in messages:
                record = await self._decode(
                    RawRecord(m.topic, m.partition, m.offset, m.key, m.value)
                )
                if record is not None:
                    batch.append(record)
        return batch

    async def commit(self, offsets: dict[Partition, int]) -> bool:
        """Commit ``offsets`` (the next offset to read per partition), waiting while Kafka
        is unavailable. False when the group rebalanced meanwhile (as after an outage
        longer than the session timeout) and the partitions may be another member's:
        nothing is committed, and their records are read again by their new owner, which
        handling them idempotently makes harmless."""
        if not offsets:
            return True
        try:
            theirs = {_theirs(p): offset for p, offset in offsets.items()}
            await self._waiting("committing", lambda: self._kafka.commit(theirs))
        except TransportError as exc:
            if not isinstance(exc.__cause__, CommitFailedError | IllegalStateError):
                raise
            log.warning("not committed (%s): %s", self._client_id, exc.__cause__)
            return False
        return True
