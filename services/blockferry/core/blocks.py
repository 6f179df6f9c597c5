"""Pure block operations: zero test, digest, checksum, compression.

A *digest* is the identity of a block's plaintext: keyed BLAKE3-256 with the
repository's dedupe key. A *checksum* is xxh3-64 of bytes, to detect accidents
cheaply on every read.
"""

from __future__ import annotations

import enum
import threading

import blake3
import xxhash
import zstandard

from blockferry.core.errors import ConfigError, CorruptionError

DIGEST_SIZE = 32
ZERO_DIGEST = bytes(DIGEST_SIZE)
"""The all-zero digest marks a zero block in a fixed index."""

BLOCK_SIZES = (256 * 1024, 512 * 1024, 1024 * 1024, 4 * 1024 * 1024)
DEFAULT_BLOCK_SIZE = 1024 * 1024
DEDUPE_KEY_SIZE = 32


class Compression(enum.StrEnum):
    """Compression levels a job may ask for, as operators name them."""

    NONE = "none"
    FAST = "fast"
    OPTIMAL = "optimal"
    HIGH = "high"
    EXTREME = "extreme"

    @property
    def zstd_level(self) -> int:
        """The zstd level behind the name; 0 means stored uncompressed."""
        return _ZSTD_LEVELS[self]


_ZSTD_LEVELS = {
    Compression.NONE: 0,
    Compression.FAST: 1,
    Compression.OPTIMAL: 3,
    Compression.HIGH: 9,
    Compression.EXTREME: 19,
}


def parse_compression(name: str) -> Compression:
    """Return the compression level called ``name``, or raise ConfigError."""
    try:
        return Compression(name.lower())
    except ValueError as exc:
        allowed = ", ".join(c.value for c in Compression)
        raise ConfigError(f"unknown compression level {name!r}: use one of {allowed}") from exc


_ZERO_CACHE: dict[int, bytes] = {}


def is_zero(data: bytes | memoryview) -> bool:
    """Whether every byte of ``data`` is zero."""
    size = len(data)
    zeros = _ZERO_CACHE.get(size)
    if zeros is None:
        zeros = _ZERO_CACHE.setdefault(size, bytes(size))
    return data == zeros


def digest(data: bytes | memoryview, key: bytes) -> bytes:
    """Keyed BLAKE3-256 of a block's plaintext with the repository's dedupe key."""
    return blake3.blake3(data, key=key, max_threads=1).digest()


KEY_FINGERPRINT_CONTEXT = "blockferry 2026-12-02 dedupe key fingerprint"
"""BLAKE3's key derivation context of :func:`key_fingerprint` (never reused elsewhere)."""


def key_fingerprint(key: bytes) -> str:
    """A dedupe key's fingerprint (32 hex digits): tells a wrong key without telling the
    key, for roles that announce or compare keys held apart."""
    return blake3.blake3(key, derive_key_context=KEY_FINGERPRINT_CONTEXT).hexdigest(length=16)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """xxh3-64 of ``data``."""
    return xxhash.xxh3_64_intdigest(data)


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def compress(data: bytes | memoryview, level: int) -> bytes:
    """zstd-compress ``data`` at ``level`` (>= 1). Thread-safe; releases the GIL."""
    return _compressor(level).compress(data)


def decompress(data: bytes | memoryview, max_size: int) -> bytes:
    """Decompress a zstd frame of at most ``max_size`` bytes, or raise CorruptionError.

    The frame's declared content size is checked first: zstd trusts it over
    ``max_output_size``, and a hostile frame must not make us allocate gigabytes.
    """
    try:
        declared = zstandard.frame_content_size(data)
        if declared > max_size:
            raise CorruptionError(
                f"decompressing chunk: frame declares {declared} bytes, more than {max_size}"
            )
        return _decompressor().decompress(data, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"decompressing chunk: {exc}") from exc


def block_count(disk_size: int, block_size: int) -> int:
    """How many blocks cover a disk of ``disk_size`` bytes (the last may be short)."""
    return (disk_size + block_size - 1) // block_size
