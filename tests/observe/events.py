"""A consumer of the public events that knows only what an outside system would: the
topics' names and the schema registry. Its deserializer is confluent-kafka's stock
AvroDeserializer: it finds each record's schema by the id the record carries."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

READ_FOR_S = 30.0


def read_events(bootstrap: str, topic: str, registry_url: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` records of ``topic``, deserialized (waiting up to
    :data:`READ_FOR_S` for them)."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"outside-reader-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + READ_FOR_S
    try:
        while len(events) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"reading {topic}: {error}")
            context = SerializationContext(topic, MessageField.VALUE)
            events.append(deserialize(message.value(), context))
    finally:
        consumer.close()
    return events
