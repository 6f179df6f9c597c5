"""Block sets as bitmaps behave as sets of block numbers, at a bit a block."""

from __future__ import annotations

import random

import pytest

from blockferry.core.block_set import BlockSet


def test_it_holds_what_a_set_would() -> None:
    rng = random.Random(1)
    count = 5000
    found, expected = BlockSet(count), set()
    for _ in range(300):
        start = rng.randrange(count)
        stop = start + rng.choice([0, 1, 7, 8, 9, 64, 200])
        if rng.random() < 0.5:
            found.add(start)
            expected.add(start)
        else:
            found.add_range(start, stop)
            expected.update(range(start, min(stop, count)))
    assert list(found) == sorted(expected)
    assert len(found) == len(expected)
    assert all((n in found) == (n in expected) for n in range(-3, count + 3))
    assert list(found.iter_from(2500)) == sorted(n for n in expected if n >= 2500)
    everything = BlockSet(count, range(count))
    assert found.missing(everything) == sorted(set(range(count)) - expected)


def test_ranges_overlapping_what_is_there_count_once() -> None:
    blocks = BlockSet(100, [3, 17, 40])
    blocks.add_range(0, 64)
    blocks.add_range(10, 20)
    assert len(blocks) == 64
    assert list(blocks) == list(range(64))


def test_an_empty_or_reversed_range_adds_nothing() -> None:
    blocks = BlockSet(64)
    blocks.add_range(8, 7)  # a zero extent inside block 7: ceil(start) > floor(end)
    blocks.add_range(20, 20)
    blocks.add_range(40, 3)
    assert list(blocks) == []
    assert len(blocks) == 0


def test_a_block_beyond_the_disk_is_refused() -> None:
    blocks = BlockSet(10)
    with pytest.raises(IndexError):
        blocks.add(10)
    blocks.add_range(8, 100)  # a range is cut to the disk
    assert list(blocks) == [8, 9]


def test_a_big_disk_costs_a_bit_a_block() -> None:
    blocks = BlockSet(4 * 262144)  # 1 TiB in 256 KiB blocks
    blocks.add_range(0, 4 * 262144)
    assert len(blocks) == 4 * 262144
    assert len(blocks._bits) == 4 * 262144 // 8


def test_its_bitmap_gives_the_same_set_back() -> None:
    blocks = BlockSet(21, [0, 7, 8, 20])
    again = BlockSet.from_bytes(21, blocks.to_bytes())
    assert list(again) == [0, 7, 8, 20]
    assert len(again) == 4
    assert BlockSet.from_bytes(0, b"").to_bytes() == b""


@pytest.mark.parametrize(("count", "data"), [(21, b"\x00\x00"), (21, b"\x00\x00\x20"), (8, b"")])
def test_a_bitmap_of_another_disk_is_refused(count: int, data: bytes) -> None:
    with pytest.raises(ValueError):
        BlockSet.from_bytes(count, data)
