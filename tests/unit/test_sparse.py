"""Data ranges of sparse files, and the blocks a file source need not read."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from blockferry.source_mover.disk_source import FileSource
from blockferry.sparse import data_ranges

KIB = 1024
BLOCK = 64 * KIB


def sparse_file(path: Path, size: int, data_at: list[int]) -> Path:
    """A file of ``size`` bytes holding 4 KiB of data at each offset of ``data_at``."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in data_at:
            f.seek(offset)
            f.write(b"x" * 4 * KIB)
    return path


def holes_reported(tmp_path: Path) -> bool:
    probe = sparse_file(tmp_path / "probe", 4 * BLOCK, [2 * BLOCK])
    with open(probe, "rb") as f:
        try:
            return os.lseek(f.fileno(), 0, os.SEEK_DATA) > 0
        except OSError:
            return False


@pytest.mark.parametrize(
    ("size", "data_at", "zero_blocks"),
    [
        (8 * BLOCK, [], set(range(8))),
        (8 * BLOCK, [0], set(range(1, 8))),
        (8 * BLOCK, [3 * BLOCK + 5], {0, 1, 2, 4, 5, 6, 7}),
        (8 * BLOCK, [7 * BLOCK], set(range(7))),
        (8 * BLOCK + 100, [2 * BLOCK], {0, 1, 3, 4, 5, 6, 7, 8}),  # a short last block
    ],
)
def test_blocks_wholly_in_holes_are_not_read(
    tmp_path: Path, size: int, data_at: list[int], zero_blocks: set[int]
) -> None:
    if not holes_reported(tmp_path):
        pytest.skip("this file system does not report holes")
    path = sparse_file(tmp_path / "disk.img", size, data_at)
    source = FileSource(path, BLOCK)
    try:
        found = asyncio.run(source.zero_blocks())
    finally:
        asyncio.run(source.close())
    assert set(found) == zero_blocks
    with open(path, "rb") as f:
        ranges = list(data_ranges(f.fileno(), size))
    assert all(0 <= start < end <= size for start, end in ranges)
    assert sum(1 for offset in data_at for s, e in ranges if s <= offset < e) == len(data_at)
