"""Sets of block numbers of one disk as bitmaps: a bit a block, whatever the set holds.

A 64 GiB disk in 256 KiB blocks has 262144 blocks: a ``set[int]`` of them takes about
15 MiB, its bitmap 32 KiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class BlockSet:
    """Block numbers in ``range(count)``."""

    def __init__(self, count: int, blocks: Iterable[int] = ()) -> None:
        if count < 0:
            raise ValueError(f"a disk of {count} blocks")
        self.count = count
        self._bits = bytearray((count + 7) // 8)
        self._len = 0
        for block in blocks:
            self.add(block)

    @classmethod
    def from_bytes(cls, count: int, data: bytes) -> BlockSet:
        """The set :meth:`to_bytes` gave; raises ValueError for a bitmap of another
        length or with bits past ``count``."""
        found = cls(count)
        if len(data) != len(found._bits):
            raise ValueError(f"a bitmap of {len(data)} bytes for {count} blocks")
        if count & 7 and data and data[-1] >> (count & 7):
            raise ValueError(f"a bitmap naming blocks past the {count} of the disk")
        found._bits[:] = data
        found._len = sum(bin(b).count("1") for b in data)
        return found

    def to_bytes(self) -> bytes:
        """The bitmap: a bit a block from block 0, the lowest bit of each byte first."""
        return bytes(self._bits)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, block: object) -> bool:
        if not isinstance(block, int) or not 0 <= block < self.count:
            return False
        return bool(self._bits[block >> 3] & (1 << (block & 7)))

    def add(self, block: int) -> None:
        if not 0 <= block < self.count:
            raise IndexError(f"block {block} of a disk of {self.count} blocks")
        byte, bit = block >> 3, 1 << (block & 7)
        if not self._bits[byte] & bit:
            self._bits[byte] |= bit
            self._len += 1

    def add_range(self, start: int, stop: int) -> None:
        """Add blocks ``start`` up to ``stop`` (excluded), whole bytes at a time."""
        start, stop = max(start, 0), min(stop, self.count)
        if start >= stop:  # an empty range (a zero extent within one block, say)
            return
        block = start
        while block < stop and block & 7:
            self.add(block)
            block += 1
        whole = (stop - block) // 8
        if whole:
            first = block >> 3
            before = sum(bin(b).count("1") for b in self._bits[first : first + whole])
            self._bits[first : first + whole] = b"\xff" * whole
            self._len += 8 * whole - before
            block += 8 * whole
        while block < stop:
            self.add(block)
            block += 1

    def __iter__(self) -> Iterator[int]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[int]:
        """The blocks from ``start`` on, in order."""
        bits = self._bits
        start = max(start, 0)
        for byte in range(start >> 3, len(bits)):
            value = bits[byte]
            if not value:
                continue
            for bit in range(8):
                block = (byte << 3) | bit
                if value & (1 << bit) and block >= start:
                    yield block

    def missing(self, wanted: BlockSet) -> list[int]:
        """The blocks of ``wanted`` not in this set, in order."""
        return [block for block in wanted if block not in self]
