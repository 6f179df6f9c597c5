"""Helpers for repository tests: test images, a minimal backup writer, byte flipping."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from blockferry.core.blocks import ZERO_DIGEST, compress, digest, is_zero
from blockferry.repository import Repository, RestorePoint, layout
from blockferry.repository.keys import Secret
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.storage import ObjectInfo, Storage
from blockferry.repository.storage_views import StorageView

BLOCK_SIZE = 256 * 1024


def make_image(pattern: str, *, tail: int = 0, tail_pattern: str = "t") -> bytes:
    """One block per character, the same character the same bytes.

    Lowercase letters are random (stored plain), uppercase compressible, ``0``
    a zero block; ``tail`` adds a short last block of ``tail_pattern``.
    """
    blocks = [block(ch) for ch in pattern]
    if tail:
        blocks.append(block(tail_pattern, tail))
    return b"".join(blocks)


def block(ch: str, size: int = BLOCK_SIZE) -> bytes:
    """The block called ``ch`` (see :func:`make_image`)."""
    if ch == "0":
        return bytes(size)
    if ch.isupper():
        return (f"block {ch} ".encode() * size)[:size]
    return random.Random(ch).randbytes(size)


def backup(
    repo: Repository,
    job: str,
    disks: dict[str, bytes],
    *,
    parent: str | None = None,
    session: str | None = None,
) -> RestorePoint:
    """Store disks the way the target side does, then commit a restore point."""
    session = session or uuid.uuid4().hex
    block_size = repo.config.block_size
    writer = repo.open_pack()
    for name, image in disks.items():
        digests = []
        for offset in range(0, len(image), block_size):
            data = image[offset : offset + block_size]
            if is_zero(data):
                digests.append(ZERO_DIGEST)
                continue
            block_digest = digest(data, repo.config.dedupe_key)
            digests.append(block_digest)
            if repo.locate(block_digest) is None:
                stored = compress(data, 1)
                compressed = len(stored) < len(data)
                writer.add(block_digest, stored if compressed else data, compressed, len(data))
        repo.stage_fixed_index(session, name, len(image), digests)
    writer.seal()
    return repo.commit_restore_point(
        job=job, session_id=session, disks=list(disks), parent=parent, stats={"disks": len(disks)}
    )


def fill_file_system(path: Path) -> None:
    """Write a file until the file system is full."""
    with path.open("wb", buffering=0) as file:
        chunk = b"\xff" * 65536
        try:
            while True:
                file.write(chunk)
        except OSError:
            pass
        try:
            while True:
                file.write(b"\xff" * 512)
        except OSError:
            pass


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place (offset may be negative)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def temporary_names(root: Path) -> list[Path]:
    """Every dot-name below ``root``: temporary files a failed write must not leave."""
    return sorted(p for p in root.rglob(".*"))


def backend(repo: Repository) -> Storage:
    """The backend under a repository's views (sealing, metering)."""
    storage = repo.storage
    while isinstance(storage, StorageView):
        storage = storage.base
    return storage


def root(repo: Repository) -> Path:
    """The directory of a repository on the local backend (what its tests damage)."""
    storage = backend(repo)
    assert isinstance(storage, LocalStorage), "a test of local files runs on local storage"
    return storage.root


def as_version_1(repo: Repository) -> Repository:
    """``repo`` (unencrypted) turned into what version 1 wrote: its config.json of
    version 1, which is all that tells the two apart (FORMAT.md); opened again."""
    config = replace(repo.config, version=1)
    (root(repo) / layout.CONFIG_FILE).write_bytes(config.to_json())
    repo.close()
    return reopen(repo)


def reopen(repo: Repository, storage: Storage | None = None) -> Repository:
    """``repo`` opened once more, as another process would (with its recovery key), on
    ``storage`` (by default its directory)."""
    base = backend(repo)
    place = storage or (LocalStorage(base.root) if isinstance(base, LocalStorage) else base)
    return Repository.open(place, secret=secret_of(repo))


def child_args(repo: Repository) -> list[str]:
    """The arguments a child process opens ``repo`` from (see :func:`open_from_args`)."""
    return [str(root(repo)), repo.recovery_key() if repo.config.encrypted else ""]


def open_from_args(argv: list[str]) -> Repository:
    """In a child process: the repository :func:`child_args` names."""
    secret = Secret.recovery_key(argv[1]) if argv[1] else None
    return Repository.open(Path(argv[0]), secret=secret)


def secret_of(repo: Repository) -> Secret | None:
    """What opens ``repo``: its recovery key, or nothing when it is not encrypted."""
    return Secret.recovery_key(repo.recovery_key()) if repo.config.encrypted else None


def file_of(repo: Repository, name: str) -> Path:
    """The file of object ``name`` of a repository on the local backend."""
    return root(repo) / name


def pack_file(repo: Repository, pack_id: str) -> Path:
    """The file of a sealed pack."""
    return file_of(repo, layout.pack(pack_id))


def fixed_index_file(repo: Repository, point: RestorePoint, disk: str) -> Path:
    """The file of a restore point's fixed index of ``disk``."""
    return file_of(repo, repo.fixed_index_name(point, disk))


class SkewedClock(StorageView):
    """A storage whose server clock is ``skew`` off: every modification time it reports
    is shifted by it."""

    def __init__(self, base: LocalStorage, skew: timedelta) -> None:
        super().__init__(base)
        self.skew = skew

    def stat(self, name: str) -> ObjectInfo:
        return self._skewed(self.base.stat(name))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return [self._skewed(info) for info in self.base.list_objects(prefix)]

    def _skewed(self, info: ObjectInfo) -> ObjectInfo:
        return replace(info, modified=info.modified + self.skew)
