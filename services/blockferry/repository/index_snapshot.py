"""The pack index's snapshot (``index/snapshot``): the digest map as a load left it.

A process starting over a big repository otherwise decodes every index file entry by
entry (ten million entries: minutes of Python); with a snapshot it reads one file into
the map's arrays as they are, and loads only the index files of packs sealed since.
Like the index files it is derived data, and only a shortcut:

* it is used only if every pack it covers still has its index file and the
  quarantined chunk copies are the ones it was made with; else it is ignored and
  written again after the full load (a GC that removed packs, a chunk quarantined);
* any damage (size, magic, version, checksum, counts) makes it ignored, never
  trusted: the index files are loaded instead;
* ``rebuild-index`` removes it before it writes index files again.

Layout, little-endian: a 64-byte header (:data:`HEADER`), then the body: the map's pack
ids in number order and the covered pack ids (16 raw bytes each), the quarantined
copies (pack id and digest, 48 bytes each), the table's taken bytes (one a slot), its
slots (digest and value each). The header ends with the body's size and its xxh3-64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3
import xxhash

from blockferry.core.blocks import DIGEST_SIZE
from blockferry.core.digest_table import MAX_LOAD, MIN_CAPACITY, DigestTable
from blockferry.repository import layout
from blockferry.repository.digest_map import LOCATION, DigestMap
from blockferry.repository.ids import PACK_ID_BYTES
from blockferry.repository.storage import ObjectNotFound, Storage

# Do not change: identifies pack index snapshots.
MAGIC = blake3.blake3(b"blockferry pack index snapshot v1").digest()[:8]
VERSION = 1
HEADER = struct.Struct("<8sHH4xQQIII4xQQ")
"""magic, version, value size, capacity, count, pack ids, covered packs, quarantined
copies, body size, body checksum."""
QUARANTINED_SIZE = PACK_ID_BYTES + DIGEST_SIZE
READ_SIZE = 64 << 20


class SnapshotUnusable(Exception):
    """The snapshot file is damaged or of another kind; why, for the log."""


@dataclass
class Snapshot:
    entries: DigestMap
    packs: set[str]
    """Packs whose entries the map holds (from their index files or footers)."""
    quarantined: set[tuple[str, bytes]]
    """The quarantined copies left out of the map."""


def write(storage: Storage, snapshot: Snapshot) -> None:
    """Publish ``snapshot`` (replacing the one there was)."""
    table = snapshot.entries.table
    parts: list[bytes | bytearray] = [
        b"".join(bytes.fromhex(p) for p in snapshot.entries.pack_ids),
        b"".join(bytes.fromhex(p) for p in sorted(snapshot.packs)),
        b"".join(bytes.fromhex(p) + d for p, d in sorted(snapshot.quarantined)),
        table.taken,
        table.slots,
    ]
    body_checksum = xxhash.xxh3_64()
    for part in parts:
        body_checksum.update(part)
    header = HEADER.pack(
        MAGIC,
        VERSION,
        table.value_size,
        table.capacity,
        table.count,
        len(snapshot.entries.pack_ids),
        len(snapshot.packs),
        len(snapshot.quarantined),
        sum(len(part) for part in parts),
        body_checksum.intdigest(),
    )
    storage.put(layout.INDEX_SNAPSHOT, [header, *parts])


def read(storage: Storage) -> Snapshot | None:
    """The snapshot, or None if there is none; raises SnapshotUnusable when it is
    damaged or not one this version writes, RepositoryError when it cannot be read."""
    try:
        size = storage.stat(layout.INDEX_SNAPSHOT).size
    except ObjectNotFound:
        return None
    return _parse(_Reader(storage, size), size)


class _Reader:
    """Reads the snapshot front to back in ranged gets of at most READ_SIZE bytes,
    into arrays allocated once (the snapshot of ten million entries is 900 MiB)."""

    def __init__(self, storage: Storage, size: int) -> None:
        self._storage = storage
        self._offset = 0
        self._size = size

    def fill(self, array: bytearray) -> bytearray:
        """Read exactly ``len(array)`` bytes into ``array``."""
        view, done = memoryview(array), 0
        while done < len(array):
            want = min(READ_SIZE, len(array) - done)
            data = self._storage.get_range(layout.INDEX_SNAPSHOT, self._offset, want)
            if not data:
                raise SnapshotUnusable("truncated")
            view[done : done + len(data)] = data
            done += len(data)
            self._offset += len(data)
        return array


def _parse(f: _Reader, size: int) -> Snapshot:
    if size < HEADER.size:
        raise SnapshotUnusable(f"truncated header ({size} bytes)")
    (magic, version, value_size, capacity, count, numbered, covered, quarantined, body, want) = (
        HEADER.unpack(f.fill(bytearray(HEADER.size)))
    )
    if magic != MAGIC:
        raise SnapshotUnusable(f"bad magic {magic.hex()}")
    if version != VERSION or value_size != LOCATION.size:
        raise SnapshotUnusable(f"version {version}, value size {value_size}: not this one's")
    if capacity < MIN_CAPACITY or capacity & (capacity - 1) or count > capacity * MAX_LOAD:
        raise SnapshotUnusable(f"capacity {capacity} for {count} entries")
    expected = (
        (numbered + covered) * PACK_ID_BYTES
        + quarantined * QUARANTINED_SIZE
        + capacity * (1 + DIGEST_SIZE + value_size)
    )
    if body != expected or size != HEADER.size + body:
        raise SnapshotUnusable(f"{size} bytes, expected {HEADER.size + expected}")
    table = DigestTable(capacity, value_size)
    ids = f.fill(bytearray(numbered * PACK_ID_BYTES))
    covered_ids = f.fill(bytearray(covered * PACK_ID_BYTES))
    copies = f.fill(bytearray(quarantined * QUARANTINED_SIZE))
    checksum = xxhash.xxh3_64()
    for part in (ids, covered_ids, copies, f.fill(table.taken), f.fill(table.slots)):
        checksum.update(part)
    if checksum.intdigest() != want:
        raise SnapshotUnusable("checksum mismatch")
    table.count = table.taken.count(1)
    if table.count != count or table.taken.count(0) != capacity - count:
        raise SnapshotUnusable(f"{table.count} slots taken, the header says {count}")
    return Snapshot(
        DigestMap.from_table(table, _pack_ids(ids)),
        set(_pack_ids(covered_ids)),
        {
            (copy[:PACK_ID_BYTES].hex(), bytes(copy[PACK_ID_BYTES:]))
            for copy in (
                copies[i : i + QUARANTINED_SIZE] for i in range(0, len(copies), QUARANTINED_SIZE)
            )
        },
    )


def _pack_ids(raw: bytearray) -> list[str]:
    return [raw[i : i + PACK_ID_BYTES].hex() for i in range(0, len(raw), PACK_ID_BYTES)]
