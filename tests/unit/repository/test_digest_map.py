"""The repository's digest map in flat arrays: what goes in comes out, the first entry
of a digest stays, colliding hashes are told apart, lookups run while it grows, and a
chunk costs bytes, not objects."""

from __future__ import annotations

import random
import threading

import pytest

from blockferry.repository.digest_map import DigestMap
from blockferry.repository.pack import PackEntry


def entry(rng: random.Random, pack: int, digest: bytes | None = None) -> PackEntry:
    plain = rng.randrange(1, 4 << 20)
    compressed = rng.random() < 0.5
    return PackEntry(
        digest=digest or rng.randbytes(32),
        pack_id=f"{pack:032x}",
        offset=rng.randrange(1 << 40),
        stored_size=rng.randrange(1, plain + 1) if compressed else plain,
        plain_size=plain,
        compressed=compressed,
    )


def test_every_entry_put_is_found_and_others_are_not() -> None:
    rng = random.Random(1)
    entries = [entry(rng, pack=n // 100) for n in range(20000)]
    digests = DigestMap()
    for e in entries:
        digests.setdefault(e)
    assert len(digests) == len(entries)
    assert [digests.get(e.digest) for e in entries] == entries
    assert all(e.digest in digests for e in entries)
    assert digests.get(rng.randbytes(32)) is None
    assert sorted(digests.values(), key=lambda e: e.digest) == sorted(
        entries, key=lambda e: e.digest
    )


def test_the_first_entry_of_a_digest_stays() -> None:
    rng = random.Random(2)
    first = entry(rng, pack=1)
    digests = DigestMap()
    digests.setdefault(first)
    digests.setdefault(entry(rng, pack=2, digest=first.digest))
    assert len(digests) == 1
    assert digests.get(first.digest) == first


def test_digests_with_the_same_hash_are_told_apart() -> None:
    rng = random.Random(3)
    prefix = rng.randbytes(8)
    same_hash = [entry(rng, pack=n, digest=prefix + rng.randbytes(24)) for n in range(50)]
    digests = DigestMap()
    for e in same_hash:
        digests.setdefault(e)
    assert [digests.get(e.digest) for e in same_hash] == same_hash
    assert digests.get(prefix + bytes(24)) is None


def test_a_digest_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DigestMap().setdefault(entry(random.Random(4), pack=0, digest=b"short"))


def test_lookups_while_it_grows_find_every_entry_added_before() -> None:
    rng = random.Random(5)
    entries = [entry(rng, pack=n // 1000) for n in range(60000)]
    digests = DigestMap()
    added = 0
    misses: list[int] = []
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            known = added
            for n in range(0, known, 97):
                if digests.get(entries[n].digest) != entries[n]:
                    misses.append(n)

    reader = threading.Thread(target=look)
    reader.start()
    try:
        for n, e in enumerate(entries):
            digests.setdefault(e)
            added = n + 1
    finally:
        done.set()
        reader.join()
    assert misses == []
    assert len(digests) == len(entries)


def test_a_chunk_costs_about_a_hundred_bytes() -> None:
    rng = random.Random(6)
    digests = DigestMap()
    count = 100_000
    for n in range(count):
        digests.setdefault(entry(rng, pack=n // 500))
    assert digests.bytes_used / count < 160
