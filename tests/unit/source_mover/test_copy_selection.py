"""The selection of blocks a copy asks its source's owner for."""

from __future__ import annotations

from blockferry.core.block_set import BlockSet
from blockferry.source_mover.restore_point_source import SELECTION_LIMIT_BYTES, selection
from blockferry.transport.topics import MAX_RECORD_BYTES


def test_the_wanted_blocks_go_as_a_bitmap() -> None:
    wanted = BlockSet(100, [1, 64, 99])
    assert list(BlockSet.from_bytes(100, selection(wanted))) == [1, 64, 99]


def test_a_bitmap_too_large_for_a_command_asks_for_every_block() -> None:
    wanted = BlockSet(100, [1])  # 13 bytes of bitmap
    assert selection(wanted, limit=13) == wanted.to_bytes()
    assert selection(wanted, limit=12) == b"", "empty: every block, the rest dropped"
    assert SELECTION_LIMIT_BYTES < MAX_RECORD_BYTES, "room left for the command"
