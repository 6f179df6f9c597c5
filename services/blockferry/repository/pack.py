"""Packs: append-only files of chunks followed by a footer index.

A pack is written under a temporary name by one :class:`PackWriter`, sealed
(footer written, fsynced, renamed into place) once, and never modified after.
The byte layout below is normative; ``schemas/repository/FORMAT.md`` describes
the same bytes for readers of other languages.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3

from blockferry import failpoints
from blockferry.core.blocks import BLOCK_SIZES, DIGEST_SIZE, ZERO_DIGEST, checksum
from blockferry.core.errors import CorruptionError, RepositoryError
from blockferry.failpoints import Point
from blockferry.repository.files import (
    FILE_MODE,
    fsync_dir,
    remove_quietly,
    storage_error,
    write_all,
)

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
#   4  reserved       4 bytes  zero
#   8  checksum       u64      xxh3-64 of all footer entries' bytes
#  16  footer length  u64      entries + trailer, so the entries start at file size - this
#  24  magic          8 bytes  PACK_FOOTER_MAGIC
FOOTER_TRAILER = struct.Struct("<I4xQQ8s")

FLAG_COMPRESSED = 0x01  # stored bytes are one zstd frame; clear = stored plain
# Bits 1-7 are reserved (bit 1 for AES-256-GCM encryption); zero in v1.
KNOWN_FLAGS = FLAG_COMPRESSED
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

    @property
    def flags(self) -> int:
        """The chunk's flag byte."""
        return FLAG_COMPRESSED if self.compressed else 0


@dataclass(frozen=True)
class SealedPack:
    """A pack that is durable under its final name, and the chunks in it."""

    pack_id: str
    entries: list[PackEntry]
    size: int = 0


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
        compressed = bool(flags & FLAG_COMPRESSED)
        if plain == 0 or (not compressed and stored != plain):
            raise CorruptionError(
                f"reading {source}: chunk {digest.hex()} has inconsistent sizes "
                f"(stored {stored}, plain {plain})"
            )
        entries.append(PackEntry(digest, pack_id, offset, stored, plain, compressed))
    return entries


def encode_footer(entries: list[PackEntry]) -> bytes:
    """The footer of a pack holding ``entries``: entries then trailer."""
    body = encode_entries(entries)
    length = len(body) + FOOTER_TRAILER.size
    return body + FOOTER_TRAILER.pack(len(entries), checksum(body), length, PACK_FOOTER_MAGIC)


class PackWriter:
    """Appends chunks to a new pack under a temporary name, then seals it.

    One writer per shard at a time. The temporary file is held under an
    exclusive ``flock`` while the writer is open, so
    :meth:`Repository.remove_unsealed` can tell a live writer's file from a
    crashed one's. Obtain writers with :meth:`Repository.open_pack`.

    Any OS error while writing aborts the pack (the temporary file is removed)
    and raises RepositoryFull or RepositoryError; chunks added to it are lost and
    must be added again to a new pack.
    """

    def __init__(
        self,
        *,
        pack_id: str,
        path: Path,
        temp_path: Path,
        max_plain_size: int,
        publish: Callable[[SealedPack], None],
    ) -> None:
        self.pack_id = pack_id
        self.path = path
        self.temp_path = temp_path
        self._max_plain_size = max_plain_size
        self._publish = publish
        self._entries: list[PackEntry] = []
        self._by_digest: dict[bytes, PackEntry] = {}
        self._fd: int | None = None
        self._size = 0
        try:
            fd = _create_locked(temp_path)
        except OSError as exc:
            raise storage_error(f"creating pack {temp_path}", exc) from exc
        self._fd = fd
        header = PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION, bytes.fromhex(pack_id))
        try:
            write_all(fd, header)
        except OSError as exc:
            self.abort()
            raise storage_error(f"creating pack {temp_path}", exc) from exc
        self._size = len(header)

    @property
    def size(self) -> int:
        """Bytes written so far, header included."""
        return self._size

    @property
    def count(self) -> int:
        """Chunks added so far."""
        return len(self._entries)

    @property
    def is_open(self) -> bool:
        """Whether chunks can still be added (not sealed, not aborted)."""
        return self._fd is not None

    def contains(self, digest: bytes) -> bool:
        """Whether a chunk with ``digest`` was already added to this pack."""
        return digest in self._by_digest

    def add(self, digest: bytes, stored: bytes, compressed: bool, plain_size: int) -> None:
        """Append a chunk; a digest already in this pack is not written again.

        The caller has verified ``digest`` against the plaintext and checked
        :meth:`Repository.locate` so that a chunk stored elsewhere is not added.

        Raises:
            ValueError: the arguments cannot describe a chunk.
            RepositoryFull: no space left; the pack was aborted.
            RepositoryError: any other write error; the pack was aborted.
        """
        fd = self._require_open()
        if digest in self._by_digest:
            return
        if len(digest) != DIGEST_SIZE or digest == ZERO_DIGEST:
            raise ValueError(f"invalid chunk digest {digest.hex()!r}")
        if not 0 < plain_size <= self._max_plain_size:
            raise ValueError(f"chunk {digest.hex()}: plain size {plain_size} out of range")
        if not compressed and len(stored) != plain_size:
            raise ValueError(f"chunk {digest.hex()}: stored plain but sizes differ")
        if len(stored) > MAX_STORED_SIZE:
            raise ValueError(f"chunk {digest.hex()}: stored size {len(stored)} too large")
        entry = PackEntry(digest, self.pack_id, self._size, len(stored), plain_size, compressed)
        header = CHUNK_HEADER.pack(digest, entry.flags, len(stored), plain_size, checksum(stored))
        try:
            written = os.writev(fd, [header, stored])
            if written < len(header) + len(stored):
                write_all(fd, (header + stored)[written:])
        except OSError as exc:
            self.abort()
            raise storage_error(
                f"writing chunk {digest.hex()} to pack {self.temp_path}", exc
            ) from exc
        self._size += len(header) + len(stored)
        self._entries.append(entry)
        self._by_digest[digest] = entry

    def seal(self) -> SealedPack:
        """Write the footer, fsync, rename into place and publish the pack index file.

        A pack without chunks is aborted and nothing is written. If publishing
        fails the sealed file is removed again, so a pack either is complete
        with its index file or does not exist.

        Raises:
            RepositoryFull, RepositoryError: the pack was aborted.
        """
        fd = self._require_open()
        if not self._entries:
            self.abort()
            return SealedPack(self.pack_id, [], 0)
        footer = encode_footer(self._entries)
        try:
            write_all(fd, footer)
            os.fsync(fd)
            failpoints.reached(Point.PACK_FOOTER_WRITTEN)
            if self.path.exists():
                raise RepositoryError(f"sealing pack {self.path}: a pack with this id exists")
            os.replace(self.temp_path, self.path)
        except OSError as exc:
            self.abort()
            raise storage_error(f"sealing pack {self.path}", exc) from exc
        except BaseException:
            self.abort()
            raise
        sealed = SealedPack(self.pack_id, list(self._entries), self._size + len(footer))
        try:
            fsync_dir(self.path.parent)
            failpoints.reached(Point.PACK_RENAMED)
            self._publish(sealed)
        except BaseException:
            remove_quietly(self.path)
            self._close()
            raise
        self._close()
        return sealed

    def abort(self) -> None:
        """Forget the pack: close and remove the temporary file. Safe to call twice."""
        if self._fd is not None:
            remove_quietly(self.temp_path)
            self._close()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require_open(self) -> int:
        if self._fd is None:
            raise RepositoryError(f"pack {self.pack_id} is sealed or aborted")
        return self._fd


def _create_locked(path: Path) -> int:
    """Create ``path`` and hold an exclusive flock on it for the writer's lifetime.

    The lock is taken blocking: remove_unsealed may be inspecting the
    just-created file; if it removed it meanwhile, the file is created again.
    """
    for _ in range(3):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            remove_quietly(path)
            raise
        os.close(fd)
    raise RepositoryError(f"creating pack {path}: removed by another process three times")


def remove_if_abandoned(path: Path) -> bool:
    """Remove a temporary pack unless a live writer holds its flock; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(f"opening unsealed pack {path}", exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(f"removing unsealed pack {path}", exc) from exc
    finally:
        os.close(fd)


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


def read_footer(path: Path, pack_id: str) -> list[PackEntry]:
    """The entries of a sealed pack, from its footer, checked against the file.

    Raises:
        CorruptionError: bad magic, truncated file, bad footer checksum or layout.
        RepositoryError: the file cannot be read.
    """
    try:
        with open(path, "rb") as file:
            fd = file.fileno()
            size = os.fstat(fd).st_size
            minimum = PACK_HEADER.size + FOOTER_TRAILER.size
            if size < minimum:
                raise CorruptionError(
                    f"reading pack {path}: truncated to {size} bytes (a sealed pack has at "
                    f"least {minimum})"
                )
            check_header(os.pread(fd, PACK_HEADER.size, 0), pack_id, str(path))
            trailer = os.pread(fd, FOOTER_TRAILER.size, size - FOOTER_TRAILER.size)
            count, entries_checksum, footer_length, magic = FOOTER_TRAILER.unpack(trailer)
            if magic != PACK_FOOTER_MAGIC:
                raise CorruptionError(
                    f"reading pack {path}: no footer magic at the end (file truncated or "
                    "footer damaged)"
                )
            expected_length = count * FOOTER_ENTRY.size + FOOTER_TRAILER.size
            if footer_length != expected_length or footer_length > size - PACK_HEADER.size:
                raise CorruptionError(
                    f"reading pack {path}: footer length {footer_length} does not fit "
                    f"{count} entries in a {size}-byte file"
                )
            body = os.pread(fd, count * FOOTER_ENTRY.size, size - footer_length)
    except FileNotFoundError as exc:
        raise CorruptionError(f"reading pack {path}: file is missing") from exc
    except OSError as exc:
        raise storage_error(f"reading pack {path}", exc) from exc
    if checksum(body) != entries_checksum:
        raise CorruptionError(f"reading pack {path}: footer checksum mismatch")
    entries = decode_entries(body, pack_id, f"pack {path}")
    _check_layout(entries, size - footer_length, str(path))
    return entries


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


def scan_chunks(path: Path, pack_id: str) -> tuple[list[PackEntry], str]:
    """Salvage the entries of a pack whose footer is damaged by walking chunk headers.

    Stops at the first chunk header or body that does not check out (in an
    intact pack, that is the footer).

    Returns:
        The entries found and why the scan stopped.

    Raises:
        CorruptionError: the pack header itself is damaged.
    """
    entries: list[PackEntry] = []
    try:
        with open(path, "rb") as file:
            fd = file.fileno()
            size = os.fstat(fd).st_size
            check_header(os.pread(fd, PACK_HEADER.size, 0), pack_id, str(path))
            offset = PACK_HEADER.size
            while True:
                header = os.pread(fd, CHUNK_HEADER.size, offset)
                if len(header) < CHUNK_HEADER.size:
                    return entries, f"end of file at offset {offset}"
                digest, flags, stored, plain, stored_checksum = CHUNK_HEADER.unpack(header)
                compressed = bool(flags & FLAG_COMPRESSED)
                if (
                    flags & ~KNOWN_FLAGS
                    or plain == 0
                    or stored > MAX_STORED_SIZE
                    or (not compressed and stored != plain)
                    or offset + CHUNK_HEADER.size + stored > size
                ):
                    return entries, f"no valid chunk header at offset {offset}"
                body = os.pread(fd, stored, offset + CHUNK_HEADER.size)
                if checksum(body) != stored_checksum:
                    return entries, f"chunk at offset {offset} fails its checksum"
                entries.append(PackEntry(digest, pack_id, offset, stored, plain, compressed))
                offset += CHUNK_HEADER.size + stored
    except OSError as exc:
        raise storage_error(f"scanning pack {path}", exc) from exc


def read_chunk(fd: int, entry: PackEntry, source: str) -> bytes:
    """A chunk's stored bytes read from an open pack, header and checksum verified.

    Raises:
        CorruptionError: naming the pack and the digest.
    """
    length = CHUNK_HEADER.size + entry.stored_size
    subject = f"chunk {entry.digest.hex()} in pack {entry.pack_id} ({source})"
    try:
        data = os.pread(fd, length, entry.offset)
    except OSError as exc:
        raise storage_error(f"reading {subject}", exc) from exc
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
