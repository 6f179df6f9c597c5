"""Pack index files (``index/<pack-id>.idx``) and the in-memory digest map.

A pack index file repeats a sealed pack's footer entries so that the map
digest -> chunk location can be loaded without opening every pack. It is
derived data: :meth:`Repository.rebuild_index` writes it again from the packs.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet

import blake3

from blockferry.core.blocks import checksum
from blockferry.core.errors import BlockferryError, CorruptionError
from blockferry.repository import index_snapshot, layout
from blockferry.repository.digest_map import DigestMap
from blockferry.repository.ids import PACK_ID_BYTES, is_pack_id
from blockferry.repository.pack import (
    FOOTER_ENTRY,
    PackEntry,
    SealedPack,
    decode_entries,
    encode_entries,
)
from blockferry.repository.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)

# Do not change: identifies pack index files written by every blockferry v1 release.
INDEX_MAGIC = blake3.blake3(b"blockferry pack index v1").digest()[:8]
INDEX_VERSION = 1

# Pack index file header, 48 bytes, followed by ``entry count`` footer entries
# (pack.FOOTER_ENTRY, 52 bytes each) in the pack's order.
#   0  magic          8 bytes  INDEX_MAGIC
#   8  version        u16      INDEX_VERSION
#  10  reserved       6 bytes  zero
#  16  pack id        16 bytes raw pack id
#  32  entry count    u32
#  36  reserved       4 bytes  zero
#  40  checksum       u64      xxh3-64 of the entries' bytes
INDEX_HEADER = struct.Struct("<8sH6x16sI4xQ")


def encode_index_file(pack_id: str, entries: list[PackEntry]) -> bytes:
    """The bytes of ``index/<pack_id>.idx``."""
    body = encode_entries(entries)
    header = INDEX_HEADER.pack(
        INDEX_MAGIC, INDEX_VERSION, bytes.fromhex(pack_id), len(entries), checksum(body)
    )
    return header + body


def decode_index_file(data: bytes, pack_id: str, source: str) -> list[PackEntry]:
    """Parse a pack index file; raises CorruptionError when it does not check out."""
    if len(data) < INDEX_HEADER.size:
        raise CorruptionError(f"reading {source}: truncated header ({len(data)} bytes)")
    magic, version, raw_id, count, entries_checksum = INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC:
        raise CorruptionError(f"reading {source}: bad magic {magic.hex()} (not a pack index)")
    if version != INDEX_VERSION:
        raise CorruptionError(f"reading {source}: unsupported version {version}")
    if raw_id.hex() != pack_id:
        raise CorruptionError(f"reading {source}: header names pack {raw_id.hex()}")
    body = data[INDEX_HEADER.size :]
    if len(body) != count * FOOTER_ENTRY.size:
        raise CorruptionError(
            f"reading {source}: {len(body)} bytes of entries, expected {count} entries"
        )
    if checksum(body) != entries_checksum:
        raise CorruptionError(f"reading {source}: checksum mismatch")
    return decode_entries(body, pack_id, source)


def list_index_files(storage: Storage) -> dict[str, int]:
    """Pack id -> size of every pack index file."""
    ids = {}
    for info in storage.list_objects(layout.INDEX):
        name = info.name[len(layout.INDEX) :]
        if not name.endswith(layout.INDEX_SUFFIX):
            continue
        pack_id = name[: -len(layout.INDEX_SUFFIX)]
        if len(pack_id) == 2 * PACK_ID_BYTES and is_pack_id(pack_id):
            ids[pack_id] = info.size
    return ids


SNAPSHOT_AFTER_ENTRIES = 100_000
"""Entries a load must decode from index files before it writes a snapshot: below, the
files load in about a second from a local disk."""

SNAPSHOT_AFTER_FILES = 100
"""Index files a load that reads as many writes a snapshot after, however few their
entries: on object storage each file is a request."""


def list_quarantined(storage: Storage) -> set[tuple[str, bytes]]:
    """(pack id, digest) of every quarantined chunk copy."""
    found = set()
    for info in storage.list_objects(layout.QUARANTINE):
        parsed = layout.parse_quarantine_name(info.name[len(layout.QUARANTINE) :])
        if parsed is not None:
            found.add(parsed)
    return found


def _put(
    entries: DigestMap,
    pack_id: str,
    pack_entries: list[PackEntry],
    quarantined: set[tuple[str, bytes]],
) -> None:
    """Add a pack's entries to ``entries``, but for its quarantined copies; a digest
    located already keeps its copy."""
    for entry in pack_entries:
        if (pack_id, entry.digest) not in quarantined:
            entries.setdefault(entry)


class PackIndex:
    """The in-memory map digest -> :class:`PackEntry` (a :class:`DigestMap`, about 100
    bytes a chunk), loaded from ``index/``.

    Each index file is read once; :meth:`refresh` lists the directory and reads
    only files it has not seen, so it is cheap to call often. A damaged or
    unreadable index file is replaced in memory by the pack's own footer (read
    through ``read_pack_entries``) and logged; :func:`check` reports it.
    A chunk copy named in ``quarantine/`` (found damaged) is left out: the digest
    is located in another copy if there is one, else not at all. The first load starts
    from the snapshot (:mod:`index_snapshot`) where it is usable, and a load that
    decoded many entries writes a new one. Thread-safe.
    """

    def __init__(
        self, storage: Storage, read_pack_entries: Callable[[str], list[PackEntry]]
    ) -> None:
        self._storage = storage
        self._read_pack_entries = read_pack_entries
        self._entries = DigestMap()
        self._packs: set[str] = set()
        self._unindexed: set[str] = set()
        """Packs in :attr:`_packs` whose entries could not be read: a snapshot must not
        cover them, so the next start tries again."""
        self._quarantined: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self._loaded = False

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    @property
    def pack_ids(self) -> frozenset[str]:
        """Packs whose entries are in the map."""
        self._ensure_loaded()
        return frozenset(self._packs)

    def locate(self, digest: bytes) -> PackEntry | None:
        """Where the chunk with ``digest`` is, or None; a hash table lookup."""
        if not self._loaded:
            self._ensure_loaded()
        return self._entries.get(digest)

    def entries(self) -> Iterator[PackEntry]:
        """Every located entry: a scan of the map as it is now (one writer may add
        meanwhile, as lookups allow; a map rebuilt meanwhile is not followed)."""
        self._ensure_loaded()
        return self._entries.values()

    def add(self, sealed: SealedPack) -> None:
        """Record a pack this process sealed (its index file is already written)."""
        with self._lock:
            _put(self._entries, sealed.pack_id, sealed.entries, self._quarantined)
            self._packs.add(sealed.pack_id)

    def refresh(self) -> None:
        """Read index files that appeared since the last load.

        If an index file disappeared (its pack was removed), the map is rebuilt
        from the files that remain.
        """
        self._refresh(rebuild=False)

    def reload(self) -> None:
        """Forget everything and load every index file again."""
        self._refresh(rebuild=True)

    def _refresh(self, rebuild: bool) -> None:
        """New index files are added to the map in place; when one disappeared, a chunk
        was quarantined or ``rebuild``, a new map is built aside and then put in place,
        so a lookup meanwhile (no lock) finds every chunk in the old map or the new."""
        with self._lock:
            present = list_index_files(self._storage)
            quarantined = list_quarantined(self._storage)
            if not self._loaded and not rebuild:
                self._start_from_snapshot(present.keys(), quarantined)
            rebuild = rebuild or bool(
                self._packs - present.keys() or quarantined - self._quarantined
            )
            entries = DigestMap() if rebuild else self._entries
            packs: set[str] = set() if rebuild else self._packs
            unindexed: set[str] = set() if rebuild else self._unindexed
            new = sorted(present.keys() - packs)
            entries.reserve(sum(_entry_count(present[pack_id]) for pack_id in new))
            decoded = 0
            for pack_id in new:
                pack_entries = self._load(pack_id)
                if pack_entries is None:
                    unindexed.add(pack_id)
                    pack_entries = []
                decoded += len(pack_entries)
                _put(entries, pack_id, pack_entries, quarantined)
                packs.add(pack_id)
            self._entries, self._packs, self._quarantined = entries, packs, quarantined
            self._unindexed = unindexed
            self._loaded = True
            if decoded >= SNAPSHOT_AFTER_ENTRIES or len(new) >= SNAPSHOT_AFTER_FILES:
                self._write_snapshot()

    def _start_from_snapshot(
        self, present: AbstractSet[str], quarantined: set[tuple[str, bytes]]
    ) -> None:
        """Take the snapshot's map if it is sound and covers only packs in ``present``
        with the same quarantined copies; else leave the map empty."""
        try:
            snapshot = index_snapshot.read(self._storage)
        except (index_snapshot.SnapshotUnusable, BlockferryError) as exc:
            where = self._storage.where(layout.INDEX_SNAPSHOT)
            log.warning("ignoring the pack index snapshot %s: %s", where, exc)
            return
        if snapshot is None:
            return
        if not snapshot.packs <= present or snapshot.quarantined != quarantined:
            log.info(
                "the pack index snapshot %s is out of date (packs removed or chunk copies"
                " quarantined since it was written); loading the index files",
                self._storage.where(layout.INDEX_SNAPSHOT),
            )
            return
        self._entries, self._packs = snapshot.entries, snapshot.packs
        self._quarantined = snapshot.quarantined

    def _write_snapshot(self) -> None:
        """Publish the map as the snapshot (best effort: it is only a shortcut)."""
        covered = self._packs - self._unindexed
        snapshot = index_snapshot.Snapshot(self._entries, covered, self._quarantined)
        try:
            index_snapshot.write(self._storage, snapshot)
        except BlockferryError as exc:
            where = self._storage.where(layout.INDEX_SNAPSHOT)
            log.warning("could not write the pack index snapshot %s: %s", where, exc)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    def _load(self, pack_id: str) -> list[PackEntry] | None:
        """A pack's entries from its index file, else its footer; None if neither reads."""
        name = layout.index_file(pack_id)
        try:
            return decode_index_file(self._storage.get(name), pack_id, name)
        except ObjectNotFound:
            return []
        except BlockferryError as exc:
            log.warning("%s; using the pack's footer instead", exc)
        try:
            return self._read_pack_entries(pack_id)
        except BlockferryError as exc:
            log.error("pack %s cannot be indexed: %s", pack_id, exc)
            return None


def _entry_count(size: int) -> int:
    """How many entries a pack index file of ``size`` bytes holds."""
    return max(0, size - INDEX_HEADER.size) // FOOTER_ENTRY.size
