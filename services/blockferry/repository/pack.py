"""Packs: objects of chunks followed by a footer index.

A pack is written by one :class:`PackWriter` and published whole when it is sealed
(footer written, object committed), once; it is never modified after.
The byte layout below is normative; ``schemas/repository/FORMAT.md`` describes
the same bytes for readers of other languages.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import blake3

from blockferry import failpoints
from blockferry.core.blocks import BLOCK_SIZES, DIGEST_SIZE, ZERO_DIGEST, checksum
from blockferry.core.errors import BlockferryError, CorruptionError, RepositoryError
from blockferry.failpoints import Point
from blockferry.repository import layout
from blockferry.repository.sealing import OVERHEAD, Sealer
from blockferry.repository.storage import ObjectNotFound, ObjectWriter, Storage

# Do not change: these values identify files written by every blockferry v1 release.
PACK_MAGIC = blake3.blake3(b"blockferry pack v1").digest()[:8]
PACK_FOOTER_MAGIC = blake3.blake3(b"blockferry pack footer v1").digest()[:8]
PACK_VERSION = 1

# Pack header, 32 bytes at offset 0 of the file.
#   0  magic          8 bytes  PACK_MAGIC
#   8  version        u16      PACK_VERSION
#  10  reserved       6 bytes  zero
#  16  pack id        16 bytes the pack id's raw bytes (the file name is their hex)
PACK_HEADER = struct.Struct("<8sH6x16s")

# Chunk header, 52 bytes, directly followed by the chunk's stored bytes.
#   0  digest         32 bytes keyed BLAKE3-256 of the plaintext
#  32  flags          u8       FLAG_* bits; unknown bits make the chunk unreadable
#  33  reserved       3 bytes  zero
#  36  stored length  u32      bytes that follow this header
#  40  plain length   u32      bytes of plaintext once decompressed
#  44  checksum       u64      xxh3-64 of the stored bytes
CHUNK_HEADER = struct.Struct("<32sB3xIIQ")

# Footer entry, 52 bytes, one per chunk, in file order.
#   0  digest         32 bytes
#  32  offset         u64      of the chunk header from the start of the file
#  40  stored length  u32
#  44  plain length   u32
#  48  flags          u8
#  49  reserved       3 bytes  zero
FOOTER_ENTRY = struct.Struct("<32sQIIB3x")

# Footer trailer, 32 bytes, the last bytes of a sealed pack.
#   0  entry count    u32
#   4  generation     u32      the repository's generation at sealing (0 in version 1)
#   8  checksum       u64      xxh3-64 of all footer entries' bytes
#  16  footer length  u64      entries + trailer, so the entries start at file size - this
#  24  magic          8 bytes  PACK_FOOTER_MAGIC
FOOTER_TRAILER = struct.Struct("<IIQQ8s")

FLAG_COMPRESSED = 0x01  # the payload is one zstd frame; clear = the plaintext itself
FLAG_ENCRYPTED = 0x02  # stored bytes are the payload sealed (sealing.py), bound to the digest
# Bits 2-7 are reserved; zero.
KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED
# No stored chunk is larger than this, even a badly compressing 4 MiB block.
MAX_STORED_SIZE = 2 * max(BLOCK_SIZES)


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where a chunk lives: its pack, the offset of its chunk header, its sizes."""

    digest: bytes
    pack_id: str
    offset: int
    stored_size: int
    plain_size: int
    compressed: bool
    encrypted: bool = False

    @property
    def flags(self) -> int:
        """The chunk's flag byte."""
        return (FLAG_COMPRESSED if self.compressed else 0) | (
            FLAG_ENCRYPTED if self.encrypted else 0
        )

    @property
    def payload_size(self) -> int:
        """Bytes of the payload (compressed or plain) once opened."""
        return self.stored_size - OVERHEAD if self.encrypted else self.stored_size


@dataclass(frozen=True)
class SealedPack:
    """A pack that is durable under its final name, and the chunks in it."""

    pack_id: str
    entries: list[PackEntry]
    size: int = 0


@dataclass(frozen=True)
class PackFooter:
    """What a sealed pack's footer says."""

    entries: list[PackEntry]
    generation: int
    """The repository's generation when the pack was sealed (:mod:`generations`)."""


def encode_entries(entries: list[PackEntry]) -> bytes:
    """Footer (and pack index file) entries for ``entries``."""
    return b"".join(
        FOOTER_ENTRY.pack(e.digest, e.offset, e.stored_size, e.plain_size, e.flags) for e in entries
    )


def decode_entries(data: bytes, pack_id: str, source: str) -> list[PackEntry]:
    """Parse footer entries; raises CorruptionError on unknown flags or bad sizes."""
    entries = []
    for digest, offset, stored, plain, flags in FOOTER_ENTRY.iter_unpack(data):
        if flags & ~KNOWN_FLAGS:
            raise CorruptionError(
                f"reading {source}: chunk {digest.hex()} has unknown flags {flags:#04x}"
            )
        entry = _entry(digest, pack_id, offset, stored, plain, flags)
        if entry is None:
            raise CorruptionError(
                f"reading {source}: chunk {digest.hex()} has inconsistent sizes "
                f"(stored {stored}, plain {plain})"
            )
        entries.append(entry)
    return entries


def _entry(
    digest: bytes, pack_id: str, offset: int, stored: int, plain: int, flags: int
) -> PackEntry | None:
    """The entry these fields describe, or None if its sizes cannot be a chunk's."""
    entry = PackEntry(
        digest,
        pack_id,
        offset,
        stored,
        plain,
        bool(flags & FLAG_COMPRESSED),
        bool(flags & FLAG_ENCRYPTED),
    )
    if plain == 0 or entry.payload_size < 0 or stored > MAX_STORED_SIZE:
        return None
    if not entry.compressed and entry.payload_size != plain:
        return None
    return entry


def encode_footer(entries: list[PackEntry], generation: int) -> bytes:
    """The footer of a pack holding ``entries``, sealed in ``generation``: entries then
    trailer."""
    body = encode_entries(entries)
    length = len(body) + FOOTER_TRAILER.size
    return body + FOOTER_TRAILER.pack(
        len(entries), generation, checksum(body), length, PACK_FOOTER_MAGIC
    )


class PackWriter:
    """Appends chunks to a new pack, then seals it: an :class:`ObjectWriter` of the
    repository's storage, so nothing is visible until the seal publishes the pack whole.

    One writer per shard at a time. Obtain writers with :meth:`Repository.open_pack`.
    Any storage error while writing aborts the pack and raises RepositoryFull or
    RepositoryError; chunks added to it are lost and must be added again to a new pack.
    """

    def __init__(
        self,
        *,
        pack_id: str,
        writer: ObjectWriter,
        max_plain_size: int,
        publish: Callable[[SealedPack], None],
        unpublish: Callable[[str], None],
        generation: Callable[[], int],
        sealer: Sealer | None = None,
    ) -> None:
        self.pack_id = pack_id
        self._generation = generation
        self._sealer = sealer
        self._writer: ObjectWriter | None = writer
        self._max_plain_size = max_plain_size
        self._publish = publish
        self._unpublish = unpublish
        self._entries: list[PackEntry] = []
        self._by_digest: dict[bytes, PackEntry] = {}
        header = PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION, bytes.fromhex(pack_id))
        try:
            writer.write([header])
        except BaseException:
            self._writer = None
            raise

    @property
    def size(self) -> int:
        """Bytes written so far, header included."""
        return self._writer.size if self._writer is not None else 0

    @property
    def count(self) -> int:
        """Chunks added so far."""
        return len(self._entries)

    @property
    def is_open(self) -> bool:
        """Whether chunks can still be added (not sealed, not aborted)."""
        return self._writer is not None

    def contains(self, digest: bytes) -> bool:
        """Whether a chunk with ``digest`` was already added to this pack."""
        return digest in self._by_digest

    def add(self, digest: bytes, stored: bytes, compressed: bool, plain_size: int) -> None:
        """Append a chunk whose payload (a zstd frame if ``compressed``, else the
        plaintext) is ``stored``, sealed first in an encrypted repository; a digest
        already in this pack is not written again.

        The caller has verified ``digest`` against the plaintext and checked
        :meth:`Repository.locate` so that a chunk stored elsewhere is not added.

        Raises:
            ValueError: the arguments cannot describe a chunk.
            RepositoryFull: no space left; the pack was aborted.
            RepositoryError: any other write error; the pack was aborted.
        """
        writer = self._require_open()
        if digest in self._by_digest:
            return
        if len(digest) != DIGEST_SIZE or digest == ZERO_DIGEST:
            raise ValueError(f"invalid chunk digest {digest.hex()!r}")
        if not 0 < plain_size <= self._max_plain_size:
            raise ValueError(f"chunk {digest.hex()}: plain size {plain_size} out of range")
        if not compressed and len(stored) != plain_size:
            raise ValueError(f"chunk {digest.hex()}: stored plain but sizes differ")
        if len(stored) > MAX_STORED_SIZE - OVERHEAD:
            raise ValueError(f"chunk {digest.hex()}: stored size {len(stored)} too large")
        body = stored if self._sealer is None else self._sealer.seal(stored, digest)
        encrypted = self._sealer is not None
        self._append(
            PackEntry(
                digest, self.pack_id, writer.size, len(body), plain_size, compressed, encrypted
            ),
            body,
        )

    def copy(self, entry: PackEntry, stored: bytes) -> None:
        """Append a chunk read from another pack, its stored bytes as they are (sealed
        or not, as the entry says): garbage collection's repacking."""
        writer = self._require_open()
        if entry.digest not in self._by_digest:
            self._append(replace(entry, pack_id=self.pack_id, offset=writer.size), stored)

    def _append(self, entry: PackEntry, stored: bytes | bytearray) -> None:
        digest = entry.digest
        header = CHUNK_HEADER.pack(
            digest, entry.flags, len(stored), entry.plain_size, checksum(stored)
        )
        try:
            self._require_open().write([header, stored])
        except BaseException:
            self.abort()
            raise
        self._entries.append(entry)
        self._by_digest[digest] = entry

    def seal(self) -> SealedPack:
        """Write the footer, publish the pack whole and then its pack index file.

        The footer records the repository's generation as it is now, after every chunk
        was added: a chunk of a session that began in generation *g* is in a pack of
        generation *g* or later.

        A pack without chunks is aborted and nothing is written. If publishing the
        index file fails the pack is removed again, so a pack either is complete with
        its index file or does not exist.

        Raises:
            RepositoryFull, RepositoryError: the pack was aborted.
        """
        writer = self._require_open()
        if not self._entries:
            self.abort()
            return SealedPack(self.pack_id, [], 0)
        try:
            footer = encode_footer(self._entries, self._generation())
            writer.write([footer])
            failpoints.reached(Point.PACK_FOOTER_WRITTEN)
            writer.commit()
        except BaseException:
            self.abort()
            raise
        self._writer = None
        sealed = SealedPack(self.pack_id, list(self._entries), writer.size)
        try:
            failpoints.reached(Point.PACK_PUBLISHED)
            self._publish(sealed)
        except BaseException:
            with contextlib.suppress(BlockferryError):
                self._unpublish(self.pack_id)
            raise
        return sealed

    def abort(self) -> None:
        """Forget the pack. Safe to call twice."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def _require_open(self) -> ObjectWriter:
        if self._writer is None:
            raise RepositoryError(f"pack {self.pack_id} is sealed or aborted")
        return self._writer


def check_header(data: bytes, pack_id: str, source: str) -> None:
    """Check a pack header's magic, version and pack id; raises CorruptionError."""
    if len(data) < PACK_HEADER.size:
        raise CorruptionError(f"reading pack {source}: truncated header ({len(data)} bytes)")
    magic, version, raw_id = PACK_HEADER.unpack_from(data)
    if magic != PACK_MAGIC:
        raise CorruptionError(f"reading pack {source}: bad magic {magic.hex()} (not a pack)")
    if version != PACK_VERSION:
        raise CorruptionError(f"reading pack {source}: unsupported pack version {version}")
    if raw_id.hex() != pack_id:
        raise CorruptionError(f"reading pack {source}: header names pack {raw_id.hex()}")


def read_footer(storage: Storage, pack_id: str) -> PackFooter:
    """A sealed pack's footer, checked against the object.

    Raises:
        CorruptionError: missing, bad magic, truncated, bad footer checksum or layout.
        RepositoryError: the pack cannot be read.
    """
    name = layout.pack(pack_id)
    source = storage.where(name)
    try:
        size = storage.stat(name).size
    except ObjectNotFound as exc:
        raise CorruptionError(f"reading pack {source}: file is missing") from exc
    minimum = PACK_HEADER.size + FOOTER_TRAILER.size
    if size < minimum:
        raise CorruptionError(
            f"reading pack {source}: truncated to {size} bytes (a sealed pack has at "
            f"least {minimum})"
        )
    check_header(storage.get_range(name, 0, PACK_HEADER.size), pack_id, source)
    trailer = storage.get_range(name, size - FOOTER_TRAILER.size, FOOTER_TRAILER.size)
    count, generation, entries_checksum, footer_length, magic = FOOTER_TRAILER.unpack(trailer)
    if magic != PACK_FOOTER_MAGIC:
        raise CorruptionError(
            f"reading pack {source}: no footer magic at the end (file truncated or footer damaged)"
        )
    expected_length = count * FOOTER_ENTRY.size + FOOTER_TRAILER.size
    if footer_length != expected_length or footer_length > size - PACK_HEADER.size:
        raise CorruptionError(
            f"reading pack {source}: footer length {footer_length} does not fit "
            f"{count} entries in a {size}-byte file"
        )
    body = storage.get_range(name, size - footer_length, count * FOOTER_ENTRY.size)
    if checksum(body) != entries_checksum:
        raise CorruptionError(f"reading pack {source}: footer checksum mismatch")
    entries = decode_entries(body, pack_id, f"pack {source}")
    _check_layout(entries, size - footer_length, source)
    return PackFooter(entries, generation)


def _check_layout(entries: list[PackEntry], chunks_end: int, source: str) -> None:
    """Chunks are contiguous from the header to the footer, in entry order."""
    offset = PACK_HEADER.size
    for entry in entries:
        if entry.offset != offset:
            raise CorruptionError(
                f"reading pack {source}: chunk {entry.digest.hex()} at offset {entry.offset}, "
                f"expected {offset}"
            )
        offset += CHUNK_HEADER.size + entry.stored_size
    if offset != chunks_end:
        raise CorruptionError(
            f"reading pack {source}: chunks end at {offset} but the footer starts at {chunks_end}"
        )


def scan_chunks(storage: Storage, pack_id: str) -> tuple[list[PackEntry], str]:
    """Salvage the entries of a pack whose footer is damaged by walking chunk headers.

    Stops at the first chunk header or body that does not check out (in an
    intact pack, that is the footer).

    Returns:
        The entries found and why the scan stopped.

    Raises:
        CorruptionError: the pack is missing or its header is damaged.
    """
    name = layout.pack(pack_id)
    source = storage.where(name)
    entries: list[PackEntry] = []
    try:
        size = storage.stat(name).size
    except ObjectNotFound as exc:
        raise CorruptionError(f"scanning pack {source}: file is missing") from exc
    check_header(storage.get_range(name, 0, PACK_HEADER.size), pack_id, source)
    offset = PACK_HEADER.size
    while True:
        header = storage.get_range(name, offset, CHUNK_HEADER.size)
        if len(header) < CHUNK_HEADER.size:
            return entries, f"end of file at offset {offset}"
        digest, flags, stored, plain, stored_checksum = CHUNK_HEADER.unpack(header)
        entry = _entry(digest, pack_id, offset, stored, plain, flags)
        if flags & ~KNOWN_FLAGS or entry is None or offset + CHUNK_HEADER.size + stored > size:
            return entries, f"no valid chunk header at offset {offset}"
        body = storage.get_range(name, offset + CHUNK_HEADER.size, stored)
        if checksum(body) != stored_checksum:
            return entries, f"chunk at offset {offset} fails its checksum"
        entries.append(entry)
        offset += CHUNK_HEADER.size + stored


def read_chunk(storage: Storage, entry: PackEntry) -> bytes:
    """A chunk's stored bytes, header and checksum verified.

    Raises:
        CorruptionError: naming the pack and the digest.
    """
    name = layout.pack(entry.pack_id)
    length = CHUNK_HEADER.size + entry.stored_size
    subject = f"chunk {entry.digest.hex()} in pack {entry.pack_id} ({name})"
    try:
        data = storage.get_range(name, entry.offset, length)
    except ObjectNotFound as exc:
        raise CorruptionError(f"reading {subject}: the pack is missing") from exc
    if len(data) != length:
        raise CorruptionError(
            f"reading {subject}: pack is truncated (wanted {length} bytes at offset "
            f"{entry.offset}, got {len(data)})"
        )
    digest, flags, stored, plain, stored_checksum = CHUNK_HEADER.unpack_from(data)
    if (digest, flags, stored, plain) != (
        entry.digest,
        entry.flags,
        entry.stored_size,
        entry.plain_size,
    ):
        raise CorruptionError(f"reading {subject}: chunk header does not match the index")
    body = data[CHUNK_HEADER.size :]
    if checksum(body) != stored_checksum:
        raise CorruptionError(f"reading {subject}: checksum mismatch")
    return body
