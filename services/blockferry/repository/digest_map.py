"""The map digest -> chunk location of a repository, in a flat hash table.

Each chunk is one slot of a :class:`~blockferry.core.digest_table.DigestTable`: the
digest, the pack's number (pack ids are kept once each), the offset, the sizes and the
flags, 53 bytes, about 100 bytes a chunk with the table's slack; a dict of Python
objects took about 400.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from blockferry.core.digest_table import DigestTable
from blockferry.repository.pack import FLAG_COMPRESSED, FLAG_ENCRYPTED, PackEntry

LOCATION = struct.Struct("<IQIIB")
"""A slot's value: pack number, offset, stored size, plain size, flags (the pack's
FLAG_* bits; snapshots written before encryption hold the compressed bit alone)."""


class DigestMap:
    """digest -> :class:`PackEntry`; the first entry put for a digest stays. Lookups may
    run while one writer adds (see :mod:`~blockferry.core.digest_table`)."""

    def __init__(self, expected: int = 0) -> None:
        self._table = DigestTable.sized_for(expected, LOCATION.size)
        self._pack_ids: list[str] = []
        self._pack_numbers: dict[str, int] = {}

    @classmethod
    def from_table(cls, table: DigestTable, pack_ids: list[str]) -> DigestMap:
        """The map over ``table`` as :attr:`table` and :attr:`pack_ids` gave it (a
        snapshot read back)."""
        entries = cls()
        entries._table = table
        entries._pack_ids = pack_ids
        entries._pack_numbers = {pack_id: number for number, pack_id in enumerate(pack_ids)}
        return entries

    def __len__(self) -> int:
        return self._table.count

    @property
    def table(self) -> DigestTable:
        """The slots: digest, pack number, offset, sizes, flags (:data:`LOCATION`)."""
        return self._table

    @property
    def pack_ids(self) -> list[str]:
        """Pack ids by the number the slots give them."""
        return self._pack_ids

    def __contains__(self, digest: bytes) -> bool:
        return self._table.find(digest)[1]

    @property
    def bytes_used(self) -> int:
        """The memory the table takes."""
        return self._table.bytes_used

    def get(self, digest: bytes) -> PackEntry | None:
        table = self._table
        i, found = table.find(digest)
        return self._entry(table, i) if found else None

    def setdefault(self, entry: PackEntry) -> None:
        """Add ``entry`` unless its digest is in the map already."""
        table = self._table
        i, found = table.find(entry.digest)
        if found:
            return
        if table.full():
            table = self._table = table.grown()
            i, _ = table.find(entry.digest)
        number = self._pack_numbers.get(entry.pack_id)
        if number is None:
            number = self._pack_numbers[entry.pack_id] = len(self._pack_ids)
            self._pack_ids.append(entry.pack_id)
        location = LOCATION.pack(
            number, entry.offset, entry.stored_size, entry.plain_size, entry.flags
        )
        table.put(i, entry.digest, location)

    def reserve(self, more: int) -> None:
        """Make room for ``more`` entries at once (growing once, not step by step)."""
        if self._table.full(more):
            self._table = self._table.grown(more)

    def values(self) -> Iterator[PackEntry]:
        """Every entry (a scan of the table)."""
        table = self._table
        for i in table.occupied():
            yield self._entry(table, i)

    def _entry(self, table: DigestTable, i: int) -> PackEntry:
        number, offset, stored, plain, flags = LOCATION.unpack_from(
            table.slots, table.value_offset(i)
        )
        digest = table.digest(i)
        return PackEntry(
            digest,
            self._pack_ids[number],
            offset,
            stored,
            plain,
            bool(flags & FLAG_COMPRESSED),
            bool(flags & FLAG_ENCRYPTED),
        )
