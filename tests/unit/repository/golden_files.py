"""Build the golden files of the repository format, deterministically.

``python tests/unit/repository/golden_files.py`` rewrites ``golden/``; do that
only for a deliberate format change (a new version), never to make a failing
test pass. ``test_golden_formats.py`` compares what the code writes today with
the committed bytes, and reads the committed bytes back.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from blockferry.core.blocks import ZERO_DIGEST, checksum, digest
from blockferry.repository import layout
from blockferry.repository.config import RepositoryConfig
from blockferry.repository.fixed_index import DigestArray, FixedIndex
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.pack import PackWriter, SealedPack
from blockferry.repository.pack_index import encode_index_file
from blockferry.repository.restore_point import RestorePoint, RestorePointDisk

GOLDEN_DIR = Path(__file__).parent / "golden"
KEY = bytes(range(32))
PACK_ID = "00112233445566778899aabbccddeeff"
CREATED = datetime(2026, 11, 26, 23, 15, 0, 123456, tzinfo=UTC)
BLOCK_SIZE = 256 * 1024
PLAIN_BLOCK = b"blockferry golden chunk, stored plain. " * 10
COMPRESSED_BLOCK = b"blockferry golden chunk, compressed. " * 40
# zstd level 3 of COMPRESSED_BLOCK, frozen here so a zstd upgrade cannot change the golden pack.
COMPRESSED_FRAME = bytes.fromhex(
    "28b52ffd60c8047501005402626c6f636b666572727920676f6c64656e206368756e6b2c20636f6d70"
    "7265737365642e200100050dfdea09"
)
DISK_SIZE = 2 * BLOCK_SIZE + 1000
GENERATION = 7
"""The generation the version 2 golden pack was sealed in (version 1 packs hold 0)."""
FILES = (
    "pack-v1.pack",
    "pack-v2.pack",
    "pack-v1.idx",
    "fixed-index-v1.fidx",
    "config-v1.json",
    "config-v2.json",
    "restorepoint-v1.json",
)


def plain_digest() -> bytes:
    return digest(PLAIN_BLOCK, KEY)


def compressed_digest() -> bytes:
    return digest(COMPRESSED_BLOCK, KEY)


def fixed_index() -> FixedIndex:
    digests = [plain_digest(), ZERO_DIGEST, compressed_digest()]
    return FixedIndex(BLOCK_SIZE, DISK_SIZE, DigestArray.from_digests(digests))


def build(directory: Path) -> None:
    """Write every golden file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)

    def publish(sealed: SealedPack) -> None:
        (directory / "pack-v1.idx").write_bytes(encode_index_file(sealed.pack_id, sealed.entries))

    for version, generation in ((1, 0), (2, GENERATION)):
        with tempfile.TemporaryDirectory() as scratch:
            storage = LocalStorage(Path(scratch))
            writer = PackWriter(
                pack_id=PACK_ID,
                writer=storage.writer(layout.pack(PACK_ID)),
                max_plain_size=BLOCK_SIZE,
                publish=publish,
                unpublish=storage.delete,
                generation=lambda generation=generation: generation,
            )
            writer.add(plain_digest(), PLAIN_BLOCK, False, len(PLAIN_BLOCK))
            writer.add(compressed_digest(), COMPRESSED_FRAME, True, len(COMPRESSED_BLOCK))
            writer.seal()
            pack = storage.get(layout.pack(PACK_ID))
            (directory / f"pack-v{version}.pack").write_bytes(pack)

    fidx = fixed_index().encode()
    (directory / "fixed-index-v1.fidx").write_bytes(fidx)

    for version in (1, 2):
        config = RepositoryConfig(
            id="0123456789abcdef0123456789abcdef",
            created=CREATED,
            block_size=1024 * 1024,
            shard_count=8,
            dedupe_key=KEY,
            version=version,
        )
        (directory / f"config-v{version}.json").write_bytes(config.to_json())

    point = RestorePoint(
        id="20261126T231500Z-1a2b3c4d",
        job="web-01",
        created=CREATED,
        parent="20261125T231500Z-0f0e0d0c",
        session_id="session-0001",
        disks=(RestorePointDisk("sda", DISK_SIZE, "sda.fidx", checksum(fidx)),),
        stats={"blocks_read": 3, "bytes_sent": 1536, "guest": {"frozen": True}},
    )
    (directory / "restorepoint-v1.json").write_bytes(point.to_json())


def pack_storage(directory: Path, version: int = 1) -> LocalStorage:
    """A storage in ``directory`` holding the golden pack of ``version`` under its name."""
    storage = LocalStorage(directory)
    storage.put(layout.pack(PACK_ID), (GOLDEN_DIR / f"pack-v{version}.pack").read_bytes())
    return storage


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN_DIR)
