import json
from collections.abc import AsyncGenerator

import pytest

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.source_mover.changes import ParentIndex, blocks_in_pages, blocks_in_ranges

BLOCK = 1024
SIZE = 10 * BLOCK + 100
PARENT = ParentIndex("rp1", SIZE, [ZERO_DIGEST] * 11)


@pytest.mark.parametrize(
    ("document", "blocks"),
    [
        ([], set()),
        ([{"offset": 0, "length": 1}], {0}),
        ([{"offset": 1023, "length": 2}], {0, 1}),
        ([{"offset": 2048, "length": 1024}], {2}),
        ([{"offset": 10 * BLOCK, "length": 100}], {10}),
        ([{"offset": 5000, "length": 0}], set()),
        ({"since": "rp1", "ranges": [{"offset": 3000, "length": 3000}]}, {2, 3, 4, 5}),
    ],
)
def test_trusted_maps_name_the_blocks_they_touch(document: object, blocks: set[int]) -> None:
    assert blocks_in_ranges(json.dumps(document), PARENT, SIZE, BLOCK) == (blocks, "")


@pytest.mark.parametrize(
    ("text", "size", "why"),
    [
        (json.dumps({"since": "rp0", "ranges": []}), SIZE, "since rp0, not since the parent rp1"),
        (json.dumps([{"offset": SIZE - 1, "length": 2}]), SIZE, "beyond the disk"),
        (json.dumps([{"offset": -1, "length": 2}]), SIZE, "beyond the disk"),
        (json.dumps([]), SIZE + 1, "changed size"),
        ("not json", SIZE, "malformed"),
        (json.dumps([{"offset": 1}]), SIZE, "malformed"),
    ],
)
def test_untrusted_maps_say_why(text: str, size: int, why: str) -> None:
    blocks, reason = blocks_in_ranges(text, PARENT, size, BLOCK)
    assert blocks is None
    assert why in reason


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
    ],
)
async def test_maps_read_in_pages_name_the_blocks_of_every_page(
    pages: list[tuple[str | None, list[int], list[int]]], blocks: set[int] | None, why: str
) -> None:
    found, reason = await blocks_in_pages(_as_pages(pages), PARENT, SIZE, BLOCK)
    assert found == blocks
    assert why in reason and bool(reason) == bool(why)
