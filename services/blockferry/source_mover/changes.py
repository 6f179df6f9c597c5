"""Which blocks an incremental backup reads: the parent restore point's fixed index,
fetched from the repository's owner through the mesh, and the operator's
changed-ranges map when one is given. A restore fetches the fixed index it writes
the same way, to check every block it receives against it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from blockferry.core import blocks
from blockferry.core.block_set import BlockSet
from blockferry.core.digest_table import DigestSet
from blockferry.core.errors import SessionError
from blockferry.mesh import Mesh
from blockferry.repository.fixed_index import DigestArray
from blockferry.transport.commands import FIXED_INDEX, FixedIndexArguments
from blockferry.transport.mailbox import Mailbox, next_record
from blockferry.transport.records import FixedIndexPage, Reply
from blockferry.transport.rpc import RemoteError

FULL = "full"
CHANGED_RANGES = "changed-ranges"
DIRTY_BITMAP = "dirty-bitmap"
DIGEST_COMPARE = "digest-compare"
SOURCE_DIGESTS = "source-digests"
"""A copy whose source and destination share the dedupe key: the blocks whose digest
in the source restore point differs from the parent's are read, no others."""


@dataclass
class ParentIndex:
    """A restore point's fixed index of a disk: an incremental's parent, or the one a
    restore writes."""

    restore_point: str
    disk_size: int
    digests: DigestArray
    """32 bytes a block, no object per block."""
    block_size: int = 0
    known: DigestSet = field(init=False)
    """Every non-zero digest of the parent: such a block need not be sent again."""

    def __post_init__(self) -> None:
        self.known = DigestSet(
            (d for d in self.digests if d != blocks.ZERO_DIGEST), expected=len(self.digests)
        )

    def nonzero_blocks(self) -> BlockSet:
        """The blocks the parent holds data for."""
        zero = blocks.ZERO_DIGEST
        return BlockSet(len(self.digests), (i for i, d in enumerate(self.digests) if d != zero))

    def digest(self, index: int) -> bytes | None:
        return self.digests[index] if index < len(self.digests) else None


async def fetch_fixed_index(
    mesh: Mesh, replies: Mailbox, repo: str, restore_point: str, disk: str, timeout: float
) -> ParentIndex:
    """Ask the repository's owner for a restore point's fixed index, page by page."""
    command_id = uuid.uuid4().hex
    queue = replies.open(command_id)
    try:
        await mesh.commands.send(
            mesh.topics.requests(repo),
            FIXED_INDEX,
            FixedIndexArguments(restore_point=restore_point, disk=disk),
            timeout,
            command_id,
        )
        pages: list[bytes] = []
        while True:
            f = (await next_record(queue, timeout, f"fixed index of {restore_point}")).value
            if isinstance(f, Reply):
                raise SessionError(
                    f"reading the fixed index of {restore_point}: {RemoteError.of(f)}"
                )
            if not isinstance(f, FixedIndexPage):
                continue
            if f.first_block * blocks.DIGEST_SIZE != sum(len(p) for p in pages):
                raise SessionError(f"fixed index of {restore_point}: a page is missing")
            pages.append(f.digests)
            if f.last:
                data = b"".join(pages)
                if len(data) % blocks.DIGEST_SIZE:
                    raise SessionError(f"fixed index of {restore_point}: a digest is cut short")
                digests = DigestArray(data)
                return ParentIndex(restore_point, f.disk_size, digests, f.block_size)
    finally:
        replies.close(command_id)


async def blocks_in_pages(
    pages: AsyncGenerator[tuple[str | None, list[int], list[int]]],
    parent: ParentIndex,
    disk_size: int,
    block_size: int,
) -> tuple[BlockSet | None, str]:
    """The blocks a changed-ranges map read page by page names (see
    :mod:`blockferry.changed_ranges`), or None and why it cannot be trusted: a map since
    another restore point than the parent, or one that does not fit the disk. A page
    that cannot be read raises SessionError."""
    found = RangeBlocks(parent, disk_size, block_size)
    async with contextlib.aclosing(pages):
        async for since, offsets, lengths in pages:
            why = found.add(since, offsets, lengths)
            if why:
                return None, why
    return found.wanted, ""


class RangeBlocks:
    """The blocks named by a changed-ranges map, gathered page by page."""

    def __init__(self, parent: ParentIndex, disk_size: int, block_size: int) -> None:
        self._parent = parent
        self._disk_size = disk_size
        self._block_size = block_size
        self.wanted = BlockSet(blocks.block_count(disk_size, block_size))

    @staticmethod
    def not_since(since: object, parent: ParentIndex) -> str:
        return (
            f"the changed-ranges map is since {since}, not since the parent {parent.restore_point}"
        )

    def add(self, since: str | None, offsets: list[int], lengths: list[int]) -> str:
        """Add a page's ranges; return why the map cannot be trusted, or ""."""
        disk_size, block_size = self._disk_size, self._block_size
        if since is not None and since != self._parent.restore_point:
            return self.not_since(since, self._parent)
        if self._parent.disk_size != disk_size:
            return (
                f"the disk changed size since the parent ({self._parent.disk_size} ->"
                f" {disk_size} bytes), so the changed-ranges map is not trusted"
            )
        for offset, length in zip(offsets, lengths, strict=True):
            if offset < 0 or length < 0 or offset + length > disk_size:
                return (
                    f"the changed-ranges map names bytes {offset}..{offset + length}"
                    f" beyond the disk's {disk_size}"
                )
            if length:
                self.wanted.add_range(offset // block_size, (offset + length - 1) // block_size + 1)
        return ""
