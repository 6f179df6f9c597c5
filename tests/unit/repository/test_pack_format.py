"""Packs: writing, sealing, reading, damage and crash recovery."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blockferry.core.blocks import ZERO_DIGEST, compress, digest
from blockferry.core.errors import CorruptionError, RepositoryError
from blockferry.repository import PackEntry, Repository
from blockferry.repository.pack import CHUNK_HEADER, FOOTER_TRAILER, PACK_HEADER
from blockferry.repository.sealing import OVERHEAD
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    block,
    child_args,
    flip_byte,
    make_image,
    pack_file,
    root,
)


def _add(repo: Repository, writer_blocks: list[bytes], *, level: int = 1) -> list[bytes]:
    writer = repo.open_pack()
    digests = []
    for data in writer_blocks:
        block_digest = digest(data, repo.config.dedupe_key)
        stored = compress(data, level)
        compressed = len(stored) < len(data)
        writer.add(block_digest, stored if compressed else data, compressed, len(data))
        digests.append(block_digest)
    writer.seal()
    return digests


@pytest.mark.local_only
def test_round_trip_plain_and_compressed(repo: Repository) -> None:
    blocks = [make_image("a"), make_image("B"), b"short last block"]
    writer = repo.open_pack()
    digests = [digest(b, repo.config.dedupe_key) for b in blocks]
    writer.add(digests[0], blocks[0], False, len(blocks[0]))
    frame = compress(blocks[1], 3)
    writer.add(digests[1], frame, True, len(blocks[1]))
    writer.add(digests[2], blocks[2], False, len(blocks[2]))
    assert writer.count == 3
    assert writer.contains(digests[1]) and not writer.contains(ZERO_DIGEST)
    sealing = OVERHEAD if repo.config.encrypted else 0  # nonce and tag of each chunk
    assert writer.size == (
        PACK_HEADER.size
        + 3 * (CHUNK_HEADER.size + sealing)
        + len(blocks[0])
        + len(frame)
        + len(blocks[2])
    )
    sealed = writer.seal()

    assert repo.sealed_pack_ids() == [sealed.pack_id]
    assert (root(repo) / "index" / f"{sealed.pack_id}.idx").is_file()
    assert pack_file(repo, sealed.pack_id).parent.name == sealed.pack_id[:2]
    assert repo.pack_entries(sealed.pack_id) == sealed.entries
    assert [e.compressed for e in sealed.entries] == [False, True, False]
    for data, block_digest in zip(blocks, digests, strict=True):
        entry = repo.locate(block_digest)
        assert entry is not None and entry.pack_id == sealed.pack_id
        assert repo.read_block(block_digest) == data
    entry = repo.locate(digests[1])
    assert entry is not None and repo.read_payload(entry) == frame


def test_a_digest_is_written_once_per_pack(repo: Repository) -> None:
    data = make_image("a")
    block_digest = digest(data, repo.config.dedupe_key)
    writer = repo.open_pack()
    writer.add(block_digest, data, False, len(data))
    size = writer.size
    writer.add(block_digest, data, False, len(data))
    assert (writer.count, writer.size) == (1, size)
    writer.abort()


@pytest.mark.parametrize(
    ("digest_value", "stored", "compressed", "plain_size"),
    [
        (b"short", b"x", False, 1),
        (ZERO_DIGEST, b"x", False, 1),
        (b"d" * 32, b"xy", False, 1),
        (b"d" * 32, b"x", True, 0),
        (b"d" * 32, b"x", True, BLOCK_SIZE + 1),
    ],
)
def test_add_rejects_invalid_chunks(
    repo: Repository, digest_value: bytes, stored: bytes, compressed: bool, plain_size: int
) -> None:
    with repo.open_pack() as writer, pytest.raises(ValueError):
        writer.add(digest_value, stored, compressed, plain_size)


@pytest.mark.local_only
def test_abort_removes_the_temporary_file_and_seal_of_empty_pack_writes_nothing(
    repo: Repository,
) -> None:
    writer = repo.open_pack()
    assert len(repo.storage.leftovers()) == 1
    writer.abort()
    writer.abort()
    assert repo.storage.leftovers() == []
    with pytest.raises(RepositoryError, match="sealed or aborted"):
        writer.add(b"d" * 32, b"x", False, 1)
    empty = repo.open_pack()
    assert empty.seal().entries == []
    assert repo.sealed_pack_ids() == []
    assert repo.storage.leftovers() == []


def test_publish_failure_removes_the_sealed_pack(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(sealed: object) -> None:
        raise RepositoryError("index file cannot be written")

    writer = repo.open_pack()
    monkeypatch.setattr(writer, "_publish", fail)
    data = make_image("a")
    writer.add(digest(data, repo.config.dedupe_key), data, False, len(data))
    with pytest.raises(RepositoryError, match="index file"):
        writer.seal()
    assert repo.sealed_pack_ids() == []
    assert repo.storage.leftovers() == []


def _sealed_pack(repo: Repository) -> tuple[Path, list[PackEntry]]:
    digests = _add(repo, [make_image("a"), make_image("B"), make_image("c")])
    entries = [repo.locate(d) for d in digests]
    assert all(entries)
    pack_id = entries[0].pack_id if entries[0] else ""
    return pack_file(repo, pack_id), [e for e in entries if e]


@pytest.mark.local_only
def test_flipped_byte_in_a_chunk_names_pack_and_digest(repo: Repository) -> None:
    path, entries = _sealed_pack(repo)
    flip_byte(path, entries[1].offset + CHUNK_HEADER.size + 5)
    with pytest.raises(CorruptionError) as caught:
        repo.read_block(entries[1].digest)
    message = str(caught.value)
    assert "checksum mismatch" in message
    assert entries[1].digest.hex() in message and entries[1].pack_id in message
    assert repo.read_block(entries[0].digest) == make_image("a")


@pytest.mark.local_only
def test_truncated_pack_gives_a_clear_error(repo: Repository) -> None:
    path, entries = _sealed_pack(repo)
    os.truncate(path, entries[2].offset + 100)
    repo.close()
    with pytest.raises(CorruptionError, match="truncated"):
        repo.read_block(entries[2].digest)
    with pytest.raises(CorruptionError, match="footer"):
        repo.pack_entries(entries[0].pack_id)
    os.truncate(path, 10)
    with pytest.raises(CorruptionError, match="truncated to 10 bytes"):
        repo.pack_entries(entries[0].pack_id)


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "bad magic"),
        (8, "unsupported pack version"),
        (20, "header names pack"),
        (-1, "no footer magic"),
        (-16, "footer length"),
        (-FOOTER_TRAILER.size - 1, "footer checksum mismatch"),
    ],
)
@pytest.mark.local_only
def test_damaged_header_or_footer(repo: Repository, offset: int, message: str) -> None:
    path, entries = _sealed_pack(repo)
    flip_byte(path, offset)
    with pytest.raises(CorruptionError, match=message):
        repo.pack_entries(entries[0].pack_id)


@pytest.mark.local_only
def test_remove_unsealed_deletes_only_crashed_temporary_packs(repo: Repository) -> None:
    _add(repo, [make_image("a")])
    sealed = repo.sealed_pack_ids()
    # A writer that crashes: its process exits without sealing.
    script = (
        "import os, sys\n"
        "from tests.unit.repository.repo_helpers import open_from_args\n"
        "repo = open_from_args(sys.argv[1:])\n"
        "writer = repo.open_pack()\n"
        "writer.add(b'd' * 32, b'partial', False, 7)\n"
        "os._exit(1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *child_args(repo)],
        capture_output=True,
        text=True,
        check=False,
    )
    [crashed] = repo.storage.leftovers()
    assert crashed.name.startswith("packs/"), result.stderr
    live = repo.open_pack()

    assert repo.remove_leftovers() == 1
    assert [info.name for info in repo.storage.leftovers()] != [crashed.name]
    assert len(repo.storage.leftovers()) == 1, "the live writer's"
    assert repo.sealed_pack_ids() == sealed
    data = make_image("c")
    live.add(digest(data, repo.config.dedupe_key), data, False, len(data))
    live.seal()
    assert len(repo.sealed_pack_ids()) == 2
    assert repo.remove_leftovers() == 0


@pytest.mark.parametrize(
    ("stored", "compressed", "plain_size", "message"),
    [
        (block("b"), False, BLOCK_SIZE, "does not match its digest"),
        (b"not a zstd frame", True, BLOCK_SIZE, "decompressing"),
        (compress(block("B"), 1), True, BLOCK_SIZE - 1, "decompressing"),
    ],
)
def test_chunks_that_pass_their_checksum_but_not_their_digest(
    repo: Repository, stored: bytes, compressed: bool, plain_size: int, message: str
) -> None:
    claimed = digest(block("a"), repo.config.dedupe_key)
    writer = repo.open_pack()
    writer.add(claimed, stored, compressed, plain_size)
    writer.seal()
    with pytest.raises(CorruptionError, match=message) as caught:
        repo.read_block(claimed)
    assert claimed.hex() in str(caught.value)
