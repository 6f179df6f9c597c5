"""Avro single-object encoding of blockferry records.

A record on the wire is ``C3 01``, the 8-byte CRC-64-AVRO fingerprint of its
writer schema's parsing canonical form (little-endian, as Java writes it), then
the Avro binary body. The reader finds the writer schema by fingerprint and
resolves it against the current reader schema of the same name, so records
written by an older release (fields added since, with defaults) still read.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from blockferry.core.errors import RecordError

MAGIC = b"\xc3\x01"
"""Avro single-object encoding marker (the Avro specification's; do not change)."""
HEADER_SIZE = len(MAGIC) + 8

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
NAMESPACE = "io.blockferry.v1"


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
        for path in sorted(schema_dir.glob("*.avsc")):
            schema = _schema(json.loads(path.read_text()))
            self._current[schema.name] = schema
            self._writers[schema.header] = schema
        for path in sorted(schema_dir.glob("history/*.avsc")):
            self.add_writer_schema(json.loads(path.read_text()))

    def add_writer_schema(self, raw: dict[str, Any]) -> None:
        """Accept records written with ``raw``, an older version of a current schema."""
        schema = _schema(raw)
        if schema.name not in self._current:
            raise RecordError(f"registering writer schema {schema.name}: no current schema")
        self._writers.setdefault(schema.header, schema)

    @property
    def names(self) -> list[str]:
        """Full names of the current record types."""
        return sorted(self._current)

    def encode(self, name: str, fields: dict[str, Any]) -> bytes:
        """Encode ``fields`` as record type ``name`` (short or full name)."""
        schema = self._current.get(name if "." in name else f"{NAMESPACE}.{name}")
        if schema is None:
            raise RecordError(f"encoding record {name}: no such schema")
        out = io.BytesIO()
        out.write(schema.header)
        try:
            fastavro.schemaless_writer(out, schema.parsed, fields)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RecordError(f"encoding record {name}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return the record's short type name and fields, or raise RecordError."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise RecordError("decoding record: not Avro single-object encoded")
        writer = self._writers.get(data[:HEADER_SIZE])
        if writer is None:
            raise RecordError(
                f"decoding record: unknown schema fingerprint {data[2:HEADER_SIZE].hex()}"
            )
        reader = self._current[writer.name]
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
        return writer.name.rsplit(".", 1)[-1], fields


def signed64(value: int) -> int:
    """An unsigned 64-bit value (a checksum) as Avro's signed long."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unsigned64(value: int) -> int:
    """Avro's signed long back to the unsigned 64-bit value it carries."""
    return value + (1 << 64) if value < 0 else value
