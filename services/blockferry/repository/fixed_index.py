"""Fixed indexes (``.fidx``): the block digests of one disk in one restore point.

Block *i* of the disk is the chunk with digest ``digests[i]``; the all-zero
digest (:data:`~blockferry.core.blocks.ZERO_DIGEST`) marks a zero block that
has no chunk. The digests are kept as one bytes object, 32 bytes per block,
so a fixed index of millions of blocks stays compact.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, overload

import blake3

from blockferry.core.blocks import DIGEST_SIZE, ZERO_DIGEST, block_count, checksum
from blockferry.core.errors import CorruptionError

# Do not change: identifies fixed index files written by every blockferry v1 release.
FIXED_INDEX_MAGIC = blake3.blake3(b"blockferry fixed index v1").digest()[:8]
FIXED_INDEX_VERSION = 1

# Fixed index header, 40 bytes, followed by ``block count`` digests of 32 bytes.
#   0  magic          8 bytes  FIXED_INDEX_MAGIC
#   8  version        u16      FIXED_INDEX_VERSION
#  10  reserved       2 bytes  zero
#  12  block size     u32      the repository's block size
#  16  disk size      u64      bytes
#  24  block count    u64      ceil(disk size / block size)
#  32  checksum       u64      xxh3-64 of the digest array
FIXED_INDEX_HEADER = struct.Struct("<8sH2xIQQQ")


class DigestArray(Sequence[bytes]):
    """A read-only sequence of 32-byte digests over one bytes object."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        if len(data) % DIGEST_SIZE:
            raise ValueError(f"digest array of {len(data)} bytes is not a multiple of 32")
        self._data = data

    @classmethod
    def from_digests(cls, digests: Sequence[bytes]) -> DigestArray:
        """Pack ``digests`` (each 32 bytes) into an array; raises ValueError."""
        if isinstance(digests, DigestArray):
            return digests
        data = b"".join(digests)
        if len(data) != len(digests) * DIGEST_SIZE or any(len(d) != DIGEST_SIZE for d in digests):
            raise ValueError("every digest must be 32 bytes")
        return cls(data)

    @property
    def data(self) -> bytes:
        """The digests, concatenated."""
        return self._data

    def __len__(self) -> int:
        return len(self._data) // DIGEST_SIZE

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> DigestArray: ...

    def __getitem__(self, index: int | slice) -> bytes | DigestArray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return DigestArray(b"".join(self[i] for i in range(start, stop, step)))
            return DigestArray(self._data[start * DIGEST_SIZE : stop * DIGEST_SIZE])
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("digest index out of range")
        return self._data[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]

    def __iter__(self) -> Iterator[bytes]:
        data = self._data
        for start in range(0, len(data), DIGEST_SIZE):
            yield data[start : start + DIGEST_SIZE]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DigestArray):
            return self._data == other._data
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        return f"DigestArray({len(self)} digests)"


@dataclass(frozen=True)
class FixedIndex:
    """A disk as a list of block digests."""

    HEADER_SIZE: ClassVar[int] = FIXED_INDEX_HEADER.size

    block_size: int
    disk_size: int
    digests: DigestArray

    def __post_init__(self) -> None:
        expected = block_count(self.disk_size, self.block_size)
        if len(self.digests) != expected:
            raise ValueError(
                f"a {self.disk_size}-byte disk has {expected} blocks of {self.block_size} "
                f"bytes, got {len(self.digests)} digests"
            )

    @property
    def block_count(self) -> int:
        """Number of blocks (the last may be short)."""
        return len(self.digests)

    def block_length(self, index: int) -> int:
        """Bytes in block ``index``."""
        return min(self.block_size, self.disk_size - index * self.block_size)

    def is_zero(self, index: int) -> bool:
        """Whether block ``index`` is a zero block."""
        return self.digests[index] == ZERO_DIGEST

    def chunk_digests(self) -> set[bytes]:
        """The distinct digests that name chunks (zero blocks left out)."""
        digests = set(self.digests)
        digests.discard(ZERO_DIGEST)
        return digests

    def encode(self) -> bytes:
        """The bytes of the ``.fidx`` file."""
        data = self.digests.data
        header = FIXED_INDEX_HEADER.pack(
            FIXED_INDEX_MAGIC,
            FIXED_INDEX_VERSION,
            self.block_size,
            self.disk_size,
            len(self.digests),
            checksum(data),
        )
        return header + data

    @staticmethod
    def salvage(data: bytes) -> set[bytes]:
        """The chunk digests a fixed index file that may be damaged names, as far as
        its bytes go: every 32 bytes after the header. A superset at worst (a damaged
        digest names no chunk), so what GC keeps for it is never too little."""
        try:
            return FixedIndex.decode(data, "").chunk_digests()
        except CorruptionError:
            digests = DigestArray(data[FIXED_INDEX_HEADER.size :][: _whole_digests(data)])
            return set(digests) - {ZERO_DIGEST}

    @staticmethod
    def check_header(data: bytes, source: str) -> tuple[int, int, int, int]:
        """Parse the header at the start of ``data`` (at least :data:`HEADER_SIZE` bytes);
        returns block size, disk size, block count and the digests' checksum.

        Raises:
            CorruptionError: truncated, not a fixed index, or a version this one cannot read.
        """
        if len(data) < FIXED_INDEX_HEADER.size:
            raise CorruptionError(
                f"reading fixed index {source}: truncated header ({len(data)} bytes)"
            )
        magic, version, block_size, disk_size, count, digests_checksum = (
            FIXED_INDEX_HEADER.unpack_from(data)
        )
        if magic != FIXED_INDEX_MAGIC:
            raise CorruptionError(
                f"reading fixed index {source}: bad magic {magic.hex()} (not a fixed index)"
            )
        if version != FIXED_INDEX_VERSION:
            raise CorruptionError(
                f"reading fixed index {source}: unsupported version {version} (this "
                f"blockferry reads version {FIXED_INDEX_VERSION}; a newer one wrote it?)"
            )
        if block_size == 0 or count != block_count(disk_size, block_size):
            raise CorruptionError(
                f"reading fixed index {source}: {count} blocks of {block_size} bytes do not "
                f"cover a disk of {disk_size} bytes"
            )
        return block_size, disk_size, count, digests_checksum

    @classmethod
    def decode(cls, data: bytes, source: str) -> FixedIndex:
        """Parse a ``.fidx`` file read from ``source``; raises CorruptionError."""
        block_size, disk_size, count, digests_checksum = cls.check_header(data, source)
        body = data[FIXED_INDEX_HEADER.size :]
        if len(body) != count * DIGEST_SIZE:
            raise CorruptionError(
                f"reading fixed index {source}: truncated ({len(body)} bytes of digests, "
                f"expected {count * DIGEST_SIZE})"
            )
        if checksum(body) != digests_checksum:
            raise CorruptionError(f"reading fixed index {source}: checksum mismatch")
        return cls(block_size, disk_size, DigestArray(body))


def _whole_digests(data: bytes) -> int:
    """Bytes of whole digests after a fixed index header in ``data``."""
    body = max(0, len(data) - FIXED_INDEX_HEADER.size)
    return body - body % DIGEST_SIZE
