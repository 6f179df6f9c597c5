"""restorepoint.json: the metadata of one committed backup of one source.

The file carries an xxh3-64 checksum of its canonical JSON body and one of
each fixed index file it lists, so verify and check detect damage to either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from blockferry.core.blocks import checksum
from blockferry.core.errors import ConfigError, CorruptionError, RepositoryError
from blockferry.repository.ids import (
    format_time,
    is_restore_point_id,
    parse_time,
    validate_name,
)
from blockferry.repository.layout import fixed_index_name

RESTORE_POINT_VERSION = 1


@dataclass(frozen=True)
class RestorePointDisk:
    """One disk of a restore point and its fixed index file."""

    name: str
    size: int
    fidx: str
    fidx_checksum: int

    def to_document(self) -> dict[str, Any]:
        """The disk as it appears in restorepoint.json."""
        return {
            "name": self.name,
            "size": self.size,
            "fidx": self.fidx,
            "fidx_checksum": f"{self.fidx_checksum:016x}",
        }


@dataclass(frozen=True)
class RestorePoint:
    """A committed restore point; ``stats`` is free-form (JSON-compatible)."""

    id: str
    job: str
    created: datetime
    parent: str | None
    session_id: str
    disks: tuple[RestorePointDisk, ...]
    stats: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    version: int = RESTORE_POINT_VERSION

    @property
    def disk_names(self) -> list[str]:
        """Names of the disks, in commit order."""
        return [disk.name for disk in self.disks]

    def disk(self, name: str) -> RestorePointDisk:
        """The disk called ``name``; raises ConfigError naming the disks there are."""
        for disk in self.disks:
            if disk.name == name:
                return disk
        raise ConfigError(
            f"restore point {self.id} of job {self.job} has no disk {name!r} "
            f"(it has: {', '.join(self.disk_names)})"
        )

    def choose_disk(self, name: str | None) -> str:
        """The disk ``name``, or with None the only disk; raises ConfigError when there is
        no such disk, or no name and several disks."""
        if name is not None:
            return self.disk(name).name
        if len(self.disks) != 1:
            raise ConfigError(
                f"restore point {self.id} has several disks: name one of"
                f" {', '.join(self.disk_names)}"
            )
        return self.disks[0].name

    def body(self) -> dict[str, Any]:
        """The JSON body without its checksum."""
        return {
            "version": self.version,
            "id": self.id,
            "job": self.job,
            "created": format_time(self.created),
            "parent": self.parent,
            "session_id": self.session_id,
            "disks": [disk.to_document() for disk in self.disks],
            "stats": self.stats,
        }

    def to_dict(self) -> dict[str, Any]:
        """The restore point as JSON-compatible data (restorepoint.json without checksum)."""
        return self.body()

    def to_json(self) -> bytes:
        """restorepoint.json's bytes: the body plus ``checksum``, indented, keys sorted."""
        body = self.body()
        try:
            document = dict(body, checksum=f"{body_checksum(body):016x}")
            text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RepositoryError(f"restore point {self.id}: stats are not JSON: {exc}") from exc
        return (text + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> RestorePoint:
        """Parse restorepoint.json read from ``source``, checksum included.

        Raises:
            CorruptionError: malformed JSON, wrong checksum or invalid fields.
        """
        try:
            document = json.loads(data.decode())
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            stored_checksum = int(document.pop("checksum"), 16)
            if body_checksum(document) != stored_checksum:
                raise CorruptionError(f"reading {source}: checksum mismatch")
            if document["version"] != RESTORE_POINT_VERSION:
                raise CorruptionError(
                    f"reading {source}: unsupported version {document['version']!r} "
                    f"(this blockferry reads version {RESTORE_POINT_VERSION}; "
                    "a newer one wrote it?)"
                )
            disks = tuple(
                RestorePointDisk(
                    name=validate_name("disk", disk["name"]),
                    size=_integer(disk["size"]),
                    fidx=str(disk["fidx"]),
                    fidx_checksum=int(disk["fidx_checksum"], 16),
                )
                for disk in document["disks"]
            )
            parent = document["parent"]
            if parent is not None and not is_restore_point_id(parent):
                raise ValueError(f"invalid parent {parent!r}")
            point = cls(
                id=str(document["id"]),
                job=validate_name("job", document["job"]),
                created=parse_time(str(document["created"])),
                parent=parent,
                session_id=validate_name("session", document["session_id"]),
                disks=disks,
                stats=dict(document["stats"]),
            )
        except CorruptionError:
            raise
        except UnicodeDecodeError as exc:
            raise CorruptionError(f"reading {source}: not UTF-8 text at byte {exc.start}") from exc
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise CorruptionError(f"reading {source}: malformed restore point: {exc!r}") from exc
        if not is_restore_point_id(point.id):
            raise CorruptionError(f"reading {source}: invalid id {point.id!r}")
        for disk in point.disks:
            if disk.fidx != fixed_index_name(disk.name):
                raise CorruptionError(f"reading {source}: disk {disk.name} names {disk.fidx!r}")
        return point


def body_checksum(body: dict[str, Any]) -> int:
    """xxh3-64 of the canonical form of a restore point body.

    Canonical: ``json.dumps(body, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)`` encoded as UTF-8 (plain ASCII).
    """
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return checksum(canonical.encode())


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a whole number, got {value!r}")
    return value
