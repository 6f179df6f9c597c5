"""A changed-ranges map in pages: every page fits a broker's default record limit."""

from __future__ import annotations

from blockferry.changed_ranges import RANGES_PER_PAGE, pages
from blockferry.transport.codec import Codec

DEFAULT_LIMIT = 1048588
"""A broker's default message.max.bytes."""
MAX_LONG = 2**63 - 1


def test_a_map_splits_into_pages_that_keep_every_range_in_order() -> None:
    ranges = [(i * 4096, 512) for i in range(2 * RANGES_PER_PAGE + 7)]
    found = pages("s", "m", "rp", ranges)
    assert [(p.page, p.pages) for p in found] == [(0, 3), (1, 3), (2, 3)]
    assert {p.since for p in found} == {"rp"}
    offsets = [o for p in found for o in p.offsets]
    lengths = [n for p in found for n in p.lengths]
    assert list(zip(offsets, lengths, strict=True)) == ranges


def test_an_empty_map_is_one_empty_page() -> None:
    (page,) = pages("s", "m", None, [])
    assert (page.pages, page.offsets, page.lengths) == (1, [], [])


def test_the_largest_page_fits_a_default_record_limit() -> None:
    """Avro longs take at most 10 bytes, whatever the ranges, with ids of any sane size."""
    (page,) = pages("s" * 200, "m" * 32, "r" * 200, [(MAX_LONG, MAX_LONG)] * RANGES_PER_PAGE)
    encoded = Codec().encode(page)
    assert len(encoded) < DEFAULT_LIMIT // 3, len(encoded)
