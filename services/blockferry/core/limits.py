"""Bounds on what a record may describe, checked before anything is sized by it.

A record's numbers (a disk's size, how many extents records a disk has, a block's
number or plaintext size) come from another process, possibly buggy or hostile. A
consumer checks them here before it allocates by them, and refuses the record with
the reason these functions return.
"""

from __future__ import annotations

import itertools

from blockferry.core.blocks import DIGEST_SIZE, block_count
from blockferry.transport.records import DiskEnd, Extents

MAX_DISK_SIZE = 64 * 1024**4
"""The largest disk blockferry backs up: 64 TiB (2^28 blocks of 256 KiB, whose fixed
index alone is 8 GiB). A record naming a larger disk is refused."""


def disk_refusal(disk_size: int, block_size: int, repo_block_size: int) -> str:
    """Why a disk of ``disk_size`` bytes in blocks of ``block_size`` cannot be one of a
    repository with blocks of ``repo_block_size``, or ""."""
    if block_size != repo_block_size:
        return f"block size {block_size} differs from the repository's {repo_block_size}"
    if not 0 <= disk_size <= MAX_DISK_SIZE:
        return f"disk size {disk_size} is out of range (0 to {MAX_DISK_SIZE} bytes)"
    return ""


def extents_refusal(extents: Extents, block_size: int) -> str:
    """Why an Extents record cannot be taken, or ""."""
    max_blocks = block_count(MAX_DISK_SIZE, block_size)
    indexes = extents.blocks
    if len(extents.digests) != DIGEST_SIZE * len(indexes):
        return f"extents record has {len(extents.digests)} digest bytes for {len(indexes)} blocks"
    if not 0 <= extents.seq < max_blocks:
        return f"extents record number {extents.seq} is out of range"
    if indexes and not 0 <= indexes[0] <= indexes[-1] < max_blocks:
        return f"extents record names blocks {indexes[0]}..{indexes[-1]}, beyond any disk"
    if any(a >= b for a, b in itertools.pairwise(indexes)):
        return "extents record names blocks out of order"
    return ""


def disk_end_refusal(end: DiskEnd, repo_block_size: int) -> str:
    """Why a DiskEnd record cannot be taken, or ""."""
    refusal = disk_refusal(end.disk_size, end.block_size, repo_block_size)
    if refusal:
        return refusal
    count = block_count(end.disk_size, end.block_size)
    if not 0 <= end.extent_records <= count:
        return (
            f"end marker counts {end.extent_records} extents records for a disk of {count} blocks"
        )
    return ""
