import json

import pytest

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.source_mover.changes import ParentIndex, blocks_in_ranges

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
