"""A schema registry's wire format (magic byte 0, the 4-byte schema id, Avro binary):
what stock Kafka deserializers read, through any registry serving the Confluent API
(Apicurio's ccompat, Karapace, Confluent's)."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from blockferry.transport.codec import SCHEMA_DIR
from blockferry.transport.records import Message


class RegistrySerializer:
    """Encodes records for ``url``'s registry, each record type's schema
    (``schemas/<Name>.avsc``) registered under ``<topic>-value`` the first time (the
    topic name strategy). Blocking: it may ask the registry over HTTP."""

    def __init__(self, url: str) -> None:
        self._client = SchemaRegistryClient({"url": url})
        self._serializers: dict[tuple[str, str], AvroSerializer] = {}

    def __call__(self, topic: str, message: Message) -> bytes:
        name = type(message).__name__
        serializer = self._serializers.get((topic, name))
        if serializer is None:
            schema = (SCHEMA_DIR / f"{name}.avsc").read_text()
            serializer = AvroSerializer(self._client, schema, _as_dict)
            self._serializers[(topic, name)] = serializer
        value = serializer(message, SerializationContext(topic, MessageField.VALUE))
        if value is None:
            raise ValueError(f"{name} serialized to nothing")
        return value


def _as_dict(message: Any, _ctx: SerializationContext | None) -> dict[str, Any]:
    data: dict[str, Any] = message.model_dump()
    return data
