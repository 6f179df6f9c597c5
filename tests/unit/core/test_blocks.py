import pytest

from blockferry.core import blocks
from blockferry.core.errors import ConfigError, CorruptionError

KEY = bytes(range(32))


@pytest.mark.parametrize(
    ("data", "zero"),
    [
        (b"", True),
        (bytes(4096), True),
        (bytes(4095) + b"\x01", False),
        (b"\x01" + bytes(10), False),
    ],
)
def test_zero_test(data: bytes, zero: bool) -> None:
    assert blocks.is_zero(data) is zero


def test_digest_is_keyed_blake3() -> None:
    import blake3

    data = b"block" * 1000
    assert blocks.digest(data, KEY) == blake3.blake3(data, key=KEY).digest()
    assert blocks.digest(data, KEY) != blocks.digest(data, bytes(32))
    assert len(blocks.digest(data, KEY)) == blocks.DIGEST_SIZE


def test_checksum_is_xxh3_64() -> None:
    import xxhash

    assert blocks.checksum(b"abc") == xxhash.xxh3_64_intdigest(b"abc")


@pytest.mark.parametrize("level", ["fast", "optimal", "high", "extreme"])
def test_compress_round_trip(level: str) -> None:
    data = b"the same line again\n" * 5000
    stored = blocks.compress(data, blocks.parse_compression(level).zstd_level)
    assert len(stored) < len(data) // 10
    assert blocks.decompress(stored, len(data)) == data


def test_decompress_rejects_garbage_and_oversize() -> None:
    with pytest.raises(CorruptionError):
        blocks.decompress(b"not a zstd frame", 100)
    stored = blocks.compress(bytes(1000) + b"x", 3)
    with pytest.raises(CorruptionError):
        blocks.decompress(stored, 100)


def test_unknown_compression_level_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="use one of none, fast, optimal, high, extreme"):
        blocks.parse_compression("ultra")


@pytest.mark.parametrize(
    ("size", "block_size", "count"),
    [(0, 1024, 0), (1, 1024, 1), (1024, 1024, 1), (1025, 1024, 2), (4 * 2**20, 2**20, 4)],
)
def test_block_count(size: int, block_size: int, count: int) -> None:
    assert blocks.block_count(size, block_size) == count
