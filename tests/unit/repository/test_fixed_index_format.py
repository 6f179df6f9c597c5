"""Fixed indexes: encoding, decoding, damage, and the compact digest array."""

from __future__ import annotations

import pytest

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.core.errors import CorruptionError
from blockferry.repository import DigestArray, FixedIndex
from blockferry.repository.fixed_index import FIXED_INDEX_HEADER

DIGESTS = [bytes([i]) * 32 for i in range(1, 4)] + [ZERO_DIGEST]


def _fidx(disk_size: int = 3 * 4096 + 10) -> FixedIndex:
    return FixedIndex(4096, disk_size, DigestArray.from_digests(DIGESTS))


def test_round_trip() -> None:
    fidx = _fidx()
    decoded = FixedIndex.decode(fidx.encode(), "t")
    assert decoded == fidx
    assert list(decoded.digests) == DIGESTS
    assert decoded.block_count == 4
    assert [decoded.block_length(i) for i in range(4)] == [4096, 4096, 4096, 10]
    assert decoded.is_zero(3) and not decoded.is_zero(0)
    assert decoded.chunk_digests() == set(DIGESTS[:3])
    assert len(decoded.encode()) == FIXED_INDEX_HEADER.size + 4 * 32


def test_empty_disk() -> None:
    fidx = FixedIndex(4096, 0, DigestArray(b""))
    assert FixedIndex.decode(fidx.encode(), "t").block_count == 0


def test_digest_array_sequence_behaviour() -> None:
    array = DigestArray.from_digests(DIGESTS)
    assert len(array) == 4
    assert array[0] == DIGESTS[0] and array[-1] == ZERO_DIGEST
    assert list(array[1:3]) == DIGESTS[1:3]
    assert list(array[::2]) == DIGESTS[::2]
    assert array == DIGESTS and array == DigestArray(array.data)
    assert DIGESTS[2] in array
    with pytest.raises(IndexError):
        array[4]
    with pytest.raises(ValueError):
        DigestArray.from_digests([b"short"])


def test_digest_count_must_cover_the_disk() -> None:
    with pytest.raises(ValueError, match="blocks"):
        FixedIndex(4096, 4096, DigestArray.from_digests(DIGESTS))


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "bad magic"),
        (8, "unsupported version"),
        (17, "do not cover"),
        (24, "do not cover"),
        (33, "checksum mismatch"),
        (FIXED_INDEX_HEADER.size + 5, "checksum mismatch"),
    ],
)
def test_damage_is_detected(offset: int, message: str) -> None:
    data = bytearray(_fidx().encode())
    data[offset] ^= 0xFF
    with pytest.raises(CorruptionError, match=message):
        FixedIndex.decode(bytes(data), "disk.fidx")


@pytest.mark.parametrize("length", [0, 10, FIXED_INDEX_HEADER.size, FIXED_INDEX_HEADER.size + 40])
def test_truncated_file_is_reported(length: int) -> None:
    with pytest.raises(CorruptionError, match="truncated"):
        FixedIndex.decode(_fidx().encode()[:length], "disk.fidx")


def test_a_fidx_of_4096_blocks_is_cheap() -> None:
    digests = [i.to_bytes(32, "little") for i in range(1, 4097)]
    fidx = FixedIndex(256 * 1024, 4096 * 256 * 1024, DigestArray.from_digests(digests))
    decoded = FixedIndex.decode(fidx.encode(), "big")
    assert decoded.digests[4095] == digests[4095]
    assert len(decoded.chunk_digests()) == 4096
