"""Avro single-object encoding of blockferry records.

A record on the wire is ``C3 01``, the 8-byte CRC-64-AVRO fingerprint of its
writer schema's parsing canonical form (little-endian, as Java writes it), then
the Avro binary body. The reader finds the writer schema by fingerprint and
resolves it against the current reader schema of the same name, so records
written by an older release (fields added since, with defaults) still read. A record
decodes into its model, the :class:`~blockferry.transport.records.Message` subclass
named after its schema (in :mod:`~blockferry.transport.records`,
:mod:`~blockferry.transport.commands`, and for the orchestrator's own state
:mod:`blockferry.orchestrator.state`): a role knows the models of what it reads.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from pydantic import ValidationError

from blockferry.core.errors import RecordError
from blockferry.transport import commands as _commands  # noqa: F401  (registers the models)
from blockferry.transport.records import Message, message_types

MAGIC = b"\xc3\x01"
"""Avro single-object encoding marker (the Avro specification's; do not change)."""
HEADER_SIZE = len(MAGIC) + 8

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Schema:
    """One parsed Avro schema and its single-object header."""

    name: str
    parsed: Any
    header: bytes


def _schema(raw: dict[str, Any]) -> Schema:
    parsed = parse_schema(raw, _write_hint=False)
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return Schema(
        name=str(raw["namespace"]) + "." + str(raw["name"]), parsed=parsed, header=MAGIC + fp
    )


class Codec:
    """Encodes records with the current schemas; decodes any known writer schema.

    Args:
        schema_dir: where the ``*.avsc`` files are; ``history/`` below it holds every
            older schema version a release ever wrote, kept so old records still read.
    """

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self._current: dict[str, Schema] = {}
        self._writers: dict[bytes, Schema] = {}
        self._models: dict[str, type[Message]] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            schema = _schema(json.loads(path.read_text()))
            self._current[schema.name.rsplit(".", 1)[-1]] = schema
            self._writers[schema.header] = schema
        for path in sorted(schema_dir.glob("history/*.avsc")):
            self.add_writer_schema(json.loads(path.read_text()))

    def add_writer_schema(self, raw: dict[str, Any]) -> None:
        """Accept records written with ``raw``, an older version of a current schema."""
        schema = _schema(raw)
        if schema.name.rsplit(".", 1)[-1] not in self._current:
            raise RecordError(f"registering writer schema {schema.name}: no current schema")
        self._writers.setdefault(schema.header, schema)

    @property
    def names(self) -> list[str]:
        """Names of the current record types."""
        return sorted(self._current)

    def encode(self, message: Message) -> bytes:
        """Encode ``message`` with the current schema of its type."""
        name = type(message).__name__
        schema = self._current.get(name)
        if schema is None:
            raise RecordError(f"encoding record {name}: no such schema")
        out = io.BytesIO()
        out.write(schema.header)
        try:
            fastavro.schemaless_writer(out, schema.parsed, message.model_dump())
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RecordError(f"encoding record {name}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> Message:
        """The record's model, or RecordError: not a record, an unknown schema, a
        malformed body, or fields its model does not take."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise RecordError("decoding record: not Avro single-object encoded")
        writer = self._writers.get(data[:HEADER_SIZE])
        if writer is None:
            raise RecordError(
                f"decoding record: unknown schema fingerprint {data[2:HEADER_SIZE].hex()}"
            )
        short = writer.name.rsplit(".", 1)[-1]
        reader = self._current[short]
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            fields = fastavro.schemaless_reader(
                body, writer.parsed, reader.parsed if reader is not writer else None
            )
        except Exception as exc:  # fastavro raises many kinds on a malformed body
            raise RecordError(f"decoding record {writer.name}: malformed body: {exc}") from exc
        if body.tell() != len(data):
            raise RecordError(
                f"decoding record {writer.name}: {len(data) - body.tell()} bytes left over"
            )
        if not isinstance(fields, dict):
            raise RecordError(f"decoding record {writer.name}: not a record")
        try:
            return self._model(short).model_validate(fields)
        except ValidationError as exc:
            raise RecordError(f"decoding record {writer.name}: {exc}") from exc

    def _model(self, name: str) -> type[Message]:
        """The model of record type ``name``, among those loaded in this process."""
        model = self._models.get(name)
        if model is None:
            model = message_types().get(name)
            if model is None:
                raise RecordError(f"decoding record {name}: no model of it in this role")
            self._models[name] = model
        return model

    def decode_as(self, data: bytes, model: type[M]) -> M:
        """:meth:`decode`, refusing a record of another type than ``model``."""
        message = self.decode(data)
        if not isinstance(message, model):
            raise RecordError(f"expected a {model.__name__} record, got a {type(message).__name__}")
        return message


def signed64(value: int) -> int:
    """An unsigned 64-bit value (a checksum) as Avro's signed long."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unsigned64(value: int) -> int:
    """Avro's signed long back to the unsigned 64-bit value it carries."""
    return value + (1 << 64) if value < 0 else value
