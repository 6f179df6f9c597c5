"""Digests in flat arrays: an open-addressing hash table in one bytearray.

Ten million digests as Python ``bytes`` in a set or dict take gigabytes (an object and a
hash entry each); here each is one fixed-size slot, the digest then a value of fixed
size, at a load between 35 and 70 percent, and no object exists per digest but the one
a lookup returns. Digests are uniformly random (keyed BLAKE3), so their first bytes
are the hash. Lookups need no lock and may run while one writer adds: a slot is marked
taken only once written, and a grown table replaces the old one whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from blockferry.core.blocks import DIGEST_SIZE

MIN_CAPACITY = 1024
MAX_LOAD = 0.7


class DigestTable:
    """``capacity`` slots of a digest and ``value_size`` bytes, and a byte per slot saying
    it is taken."""

    def __init__(self, capacity: int, value_size: int) -> None:
        self.capacity = capacity
        self.value_size = value_size
        self.slot_size = DIGEST_SIZE + value_size
        self.slots = bytearray(capacity * self.slot_size)
        self.taken = bytearray(capacity)
        self.count = 0

    @classmethod
    def sized_for(cls, count: int, value_size: int) -> DigestTable:
        capacity = MIN_CAPACITY
        while count > capacity * MAX_LOAD:
            capacity *= 2
        return cls(capacity, value_size)

    @property
    def bytes_used(self) -> int:
        return len(self.slots) + len(self.taken)

    def full(self, more: int = 1) -> bool:
        """Whether ``more`` digests would load it beyond :data:`MAX_LOAD`."""
        return self.count + more > self.capacity * MAX_LOAD

    def find(self, digest: bytes) -> tuple[int, bool]:
        """The slot holding ``digest`` (True), or the free slot it would take (False)."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a digest has {DIGEST_SIZE} bytes, not {len(digest)}")
        mask, size = self.capacity - 1, self.slot_size
        i = int.from_bytes(digest[:8], "little") & mask
        slots, taken = self.slots, self.taken
        while taken[i]:
            start = i * size
            if slots[start : start + DIGEST_SIZE] == digest:
                return i, True
            i = (i + 1) & mask
        return i, False

    def put(self, i: int, digest: bytes, value: bytes = b"") -> None:
        """Fill free slot ``i`` (from :meth:`find`)."""
        start = i * self.slot_size
        self.slots[start : start + self.slot_size] = digest + value
        self.taken[i] = 1  # last: a lookup meanwhile sees the slot free or whole
        self.count += 1

    def digest(self, i: int) -> bytes:
        start = i * self.slot_size
        return bytes(self.slots[start : start + DIGEST_SIZE])

    def value_offset(self, i: int) -> int:
        """Where slot ``i``'s value starts in :attr:`slots`."""
        return i * self.slot_size + DIGEST_SIZE

    def occupied(self) -> Iterator[int]:
        taken = self.taken
        i = taken.find(1)
        while i >= 0:
            yield i
            i = taken.find(1, i + 1)

    def grown(self, more: int = 1) -> DigestTable:
        """A table of twice the size or more, with room for ``more`` digests, holding the
        same slots."""
        capacity = self.capacity * 2
        while self.count + more > capacity * MAX_LOAD:
            capacity *= 2
        bigger = DigestTable(capacity, self.value_size)
        for i in self.occupied():
            digest = self.digest(i)
            j, _ = bigger.find(digest)
            offset = self.value_offset(i)
            bigger.put(j, digest, bytes(self.slots[offset : offset + self.value_size]))
        return bigger


class DigestSet:
    """A set of digests in a :class:`DigestTable`: about 50 bytes a digest."""

    def __init__(self, digests: Iterable[bytes] = (), expected: int = 0) -> None:
        self._table = DigestTable.sized_for(expected, 0)
        for digest in digests:
            self.add(digest)

    def __len__(self) -> int:
        return self._table.count

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, bytes) and self._table.find(digest)[1]

    def add(self, digest: bytes) -> None:
        table = self._table
        i, found = table.find(digest)
        if found:
            return
        if table.full():
            table = self._table = table.grown()
            i, _ = table.find(digest)
        table.put(i, digest)

    @property
    def bytes_used(self) -> int:
        return self._table.bytes_used
