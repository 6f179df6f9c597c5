from collections.abc import AsyncGenerator

import pytest

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.repository.fixed_index import DigestArray
from blockferry.source_mover.changes import ParentIndex, blocks_in_pages

BLOCK = 1024
SIZE = 10 * BLOCK + 100
PARENT = ParentIndex("rp1", SIZE, DigestArray(ZERO_DIGEST * 11))


async def _as_pages(
    pages: list[tuple[str | None, list[int], list[int]]],
) -> AsyncGenerator[tuple[str | None, list[int], list[int]]]:
    for page in pages:
        yield page


@pytest.mark.parametrize(
    ("pages", "blocks", "why"),
    [
        ([(None, [0, 3000], [1, 3000])], {0, 2, 3, 4, 5}, ""),
        ([("rp1", [0], [1]), ("rp1", [10 * BLOCK], [100])], {0, 10}, ""),
        ([("rp1", [0], [1]), ("rp0", [2048], [1])], None, "since rp0, not since the parent"),
        ([(None, [0], [1]), (None, [SIZE], [1])], None, "beyond the disk"),
        ([], set(), ""),
        ([(None, [1023, 5000], [2, 0])], {0, 1}, ""),
        ([(None, [10 * BLOCK], [100])], {10}, ""),
        ([("rp0", [], [])], None, "since rp0, not since the parent rp1"),
        ([(None, [-1], [2])], None, "beyond the disk"),
    ],
)
async def test_maps_read_in_pages_name_the_blocks_of_every_page(
    pages: list[tuple[str | None, list[int], list[int]]], blocks: set[int] | None, why: str
) -> None:
    found, reason = await blocks_in_pages(_as_pages(pages), PARENT, SIZE, BLOCK)
    assert (found if found is None else set(found)) == blocks
    assert why in reason and bool(reason) == bool(why)


async def test_a_map_of_a_disk_that_changed_size_is_not_trusted() -> None:
    found, reason = await blocks_in_pages(_as_pages([(None, [], [])]), PARENT, SIZE + 1, BLOCK)
    assert found is None, "an empty map (one page without ranges) of a resized disk"
    assert "changed size" in reason
