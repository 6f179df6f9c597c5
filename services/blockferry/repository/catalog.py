"""File catalogs (``restorepoints/<job>/<id>/catalog.jsonl.zst``): every file of a
restore point's disks, so a search answers without opening a disk image.

A catalog is written once, after its restore point's commit, in its restore point's
directory; it goes with the restore point when prune removes it. It is derived data: a
missing one means "not catalogued" (build it again), never "no files".

Format: a zstd frame of UTF-8 JSON lines. The first line is the header, the others one
entry each::

    {"version": 1, "restore_point": ID, "job": JOB, "created": TIME}
    {"disk": "sda", "path": "/p1/etc/hosts", "kind": "file", "size": 220, "mtime_ns": 17...}

An encrypted repository seals it as every other object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import zstandard

from blockferry.core.errors import CorruptionError
from blockferry.repository import layout
from blockferry.repository.ids import format_time
from blockferry.repository.restore_point import RestorePoint
from blockferry.repository.storage import ObjectNotFound, Storage

CATALOG_VERSION = 1
CATALOG_NAME = "catalog.jsonl.zst"


@dataclass(frozen=True)
class CatalogEntry:
    """One entry of a disk's file systems."""

    disk: str
    path: str
    kind: str
    size: int
    mtime_ns: int


def catalog_name(point: RestorePoint) -> str:
    """The object of ``point``'s catalog."""
    return layout.restore_point_prefix(point.job, point.id) + CATALOG_NAME


def write_catalog(storage: Storage, point: RestorePoint, entries: Iterable[CatalogEntry]) -> int:
    """Write ``point``'s catalog (replacing one there); returns how many entries."""
    header = {
        "version": CATALOG_VERSION,
        "restore_point": point.id,
        "job": point.job,
        "created": format_time(point.created),
    }
    lines = [json.dumps(header)]
    lines += [json.dumps(asdict(entry), ensure_ascii=False) for entry in entries]
    data = zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode())
    storage.put(catalog_name(point), data)
    return len(lines) - 1


def read_catalog(storage: Storage, point: RestorePoint) -> Iterator[CatalogEntry] | None:
    """The entries of ``point``'s catalog, or None when it has none.

    Raises:
        CorruptionError: the catalog is damaged (naming it).
    """
    name = catalog_name(point)
    try:
        data = storage.get(name)
    except ObjectNotFound:
        return None
    try:
        text = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 34).decode()
        lines = text.splitlines()
        header = json.loads(lines[0])
        if header["version"] != CATALOG_VERSION or header["restore_point"] != point.id:
            raise ValueError(f"header {header!r}")
        entries = [CatalogEntry(**json.loads(line)) for line in lines[1:]]
    except (zstandard.ZstdError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(f"reading {storage.where(name)}: {exc}") from exc
    return iter(entries)
