"""The pack index: index files, the in-memory map, refresh and rebuild."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from blockferry.core.blocks import digest
from blockferry.core.errors import CorruptionError
from blockferry.repository import Repository
from blockferry.repository.pack_index import decode_index_file, encode_index_file
from tests.unit.repository.repo_helpers import block, flip_byte, pack_file, reopen, root


def _store(repo: Repository, names: str) -> list[bytes]:
    writer = repo.open_pack()
    digests = []
    for ch in names:
        data = block(ch)
        digests.append(digest(data, repo.config.dedupe_key))
        writer.add(digests[-1], data, False, len(data))
    writer.seal()
    return digests


def test_index_file_round_trip(repo: Repository) -> None:
    _store(repo, "ab")
    (pack_id,) = repo.sealed_pack_ids()
    entries = repo.pack_entries(pack_id)
    data = encode_index_file(pack_id, entries)
    assert decode_index_file(data, pack_id, "idx") == entries


@pytest.mark.parametrize(
    ("offset", "message"),
    [(0, "bad magic"), (8, "unsupported version"), (16, "header names pack"), (-1, "checksum")],
)
def test_index_file_damage_is_detected(repo: Repository, offset: int, message: str) -> None:
    _store(repo, "ab")
    (pack_id,) = repo.sealed_pack_ids()
    data = encode_index_file(pack_id, repo.pack_entries(pack_id))
    with pytest.raises(CorruptionError, match="entries"):
        decode_index_file(data[:-1], pack_id, "idx")
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    with pytest.raises(CorruptionError, match=message):
        decode_index_file(bytes(damaged), pack_id, "idx")


def test_other_process_sees_new_packs_after_refresh(repo: Repository) -> None:
    other = reopen(repo)
    first = _store(repo, "a")
    assert other.locate(first[0]) is not None  # first use loads the index
    second = _store(repo, "b")
    assert other.locate(second[0]) is None
    other.refresh_index()
    assert other.locate(second[0]) is not None
    assert other.read_block(second[0]) == block("b")


def test_refresh_reads_only_new_index_files(
    repo: Repository, decoded_index_files: list[str]
) -> None:
    for ch in "abc":
        _store(repo, ch)
    other = reopen(repo)
    other.refresh_index()
    reads = decoded_index_files
    reads.clear()
    other.refresh_index()
    assert reads == []
    _store(repo, "d")
    other.refresh_index()
    assert len(reads) == 1
    assert other.indexed_chunk_count() == 4


def test_read_block_refreshes_once_on_a_miss(repo: Repository) -> None:
    other = reopen(repo)
    other.refresh_index()
    (new,) = _store(repo, "a")
    assert other.read_block(new) == block("a")
    with pytest.raises(CorruptionError, match="missing"):
        other.read_block(b"\x01" * 32)


@pytest.mark.local_only
def test_deleted_index_is_rebuilt_from_packs(repo: Repository) -> None:
    digests = _store(repo, "ab") + _store(repo, "c")
    shutil.rmtree(root(repo) / "index")
    fresh = reopen(repo)
    assert all(fresh.locate(d) is None for d in digests)
    assert fresh.rebuild_index() == 2
    assert all(fresh.locate(d) is not None for d in digests)
    assert fresh.read_block(digests[2]) == block("c")


@pytest.mark.local_only
def test_rebuild_scans_chunks_when_a_footer_is_damaged(repo: Repository) -> None:
    digests = _store(repo, "abc")
    (pack_id,) = repo.sealed_pack_ids()
    flip_byte(pack_file(repo, pack_id), -1)
    assert repo.rebuild_index() == 1
    fresh = reopen(repo)
    assert all(fresh.read_block(d) == block(ch) for d, ch in zip(digests, "abc", strict=True))
    with pytest.raises(CorruptionError, match="footer"):
        fresh.pack_entries(pack_id)


@pytest.mark.local_only
def test_rebuild_missing_only_and_orphans(repo: Repository) -> None:
    _store(repo, "a")
    (kept,) = _store(repo, "b")
    entry = repo.locate(kept)
    assert entry is not None
    (root(repo) / "index" / f"{entry.pack_id}.idx").unlink()
    orphan = root(repo) / "index" / ("f" * 32 + ".idx")
    orphan.write_bytes(b"junk")
    assert repo.rebuild_index(missing_only=True) == 1
    assert orphan.exists()
    assert repo.rebuild_index() == 2
    assert not orphan.exists()


@pytest.mark.local_only
def test_damaged_index_file_falls_back_to_the_pack_footer(repo: Repository) -> None:
    (only,) = _store(repo, "a")
    entry = repo.locate(only)
    assert entry is not None
    flip_byte(root(repo) / "index" / f"{entry.pack_id}.idx", -1)
    fresh = reopen(repo)
    assert fresh.locate(only) == entry


def test_shards_write_packs_concurrently(repo: Repository) -> None:
    def shard(names: str) -> None:
        _store(repo, names)

    threads = [threading.Thread(target=shard, args=(names,)) for names in ("abc", "def", "ghi")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(repo.sealed_pack_ids()) == 3
    fresh = reopen(repo)
    assert all(fresh.read_block(digest(block(ch), repo.config.dedupe_key)) for ch in "abcdefghi")


@pytest.mark.local_only
def test_a_chunk_stays_located_while_another_is_quarantined(repo: Repository) -> None:
    """Quarantining a chunk rebuilds the map; a lookup in another thread meanwhile (a
    restore's read-ahead, a commit's check) must still find every other chunk. The map
    used to be cleared and filled again in place: such a lookup found nothing, and a
    restore named healthy blocks missing."""
    entries = []
    for _ in range(150):
        writer = repo.open_pack()
        for _ in range(20):
            data = os.urandom(64)
            writer.add(digest(data, repo.config.dedupe_key), data, False, len(data))
        entries += writer.seal().entries
    healthy, damaged = entries[0], entries[1:40]
    assert repo.locate(healthy.digest) == healthy
    misses = 0
    stop = threading.Event()

    def look() -> None:
        nonlocal misses
        while not stop.is_set():
            misses += repo.locate(healthy.digest) is None

    looking = threading.Thread(target=look)
    looking.start()
    try:
        for entry in damaged:
            repo.quarantine(entry, "test")
    finally:
        stop.set()
        looking.join()
    assert misses == 0
    assert all(repo.locate(e.digest) is None for e in damaged)
