"""Which blocks an incremental backup reads: the parent restore point's fixed index,
fetched from the repository's owner through the mesh, and the operator's
changed-ranges map when one is given. A restore fetches the fixed index it writes
the same way, to check every block it receives against it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from blockferry.core import blocks
from blockferry.core.errors import SessionError
from blockferry.mesh import Mesh
from blockferry.transport.mailbox import Mailbox, next_record

FULL = "full"
CHANGED_RANGES = "changed-ranges"
DIRTY_BITMAP = "dirty-bitmap"
DIGEST_COMPARE = "digest-compare"


@dataclass
class ParentIndex:
    """A restore point's fixed index of a disk: an incremental's parent, or the one a
    restore writes."""

    restore_point: str
    disk_size: int
    digests: list[bytes]
    block_size: int = 0
    known: set[bytes] = field(init=False)
    """Every non-zero digest of the parent: such a block need not be sent again."""

    def __post_init__(self) -> None:
        self.known = set(self.digests) - {blocks.ZERO_DIGEST}

    def digest(self, index: int) -> bytes | None:
        return self.digests[index] if index < len(self.digests) else None


async def fetch_fixed_index(
    mesh: Mesh, replies: Mailbox, repo: str, restore_point: str, disk: str, timeout: float
) -> ParentIndex:
    """Ask the repository's owner for a restore point's fixed index, page by page."""
    command_id = uuid.uuid4().hex
    queue = replies.open(command_id)
    try:
        await mesh.producer.send_and_wait(
            mesh.topics.commands(repo),
            "Command",
            {
                "command_id": command_id,
                "name": "fixed-index",
                "arguments": json.dumps({"restore_point": restore_point, "disk": disk}),
            },
            key=command_id,
        )
        pages: list[bytes] = []
        while True:
            record = await next_record(queue, timeout, f"fixed index of {restore_point}")
            f = record.fields
            if record.name == "Reply":
                raise SessionError(f"reading the fixed index of {restore_point}: {f['error']}")
            if f["first_block"] * blocks.DIGEST_SIZE != sum(len(p) for p in pages):
                raise SessionError(f"fixed index of {restore_point}: a page is missing")
            pages.append(f["digests"])
            if f["last"]:
                data = b"".join(pages)
                digests = [
                    data[i : i + blocks.DIGEST_SIZE]
                    for i in range(0, len(data), blocks.DIGEST_SIZE)
                ]
                return ParentIndex(restore_point, f["disk_size"], digests, f["block_size"])
    finally:
        replies.close(command_id)


def blocks_in_ranges(
    text: str, parent: ParentIndex, disk_size: int, block_size: int
) -> tuple[set[int] | None, str]:
    """The blocks a changed-ranges map names, or None and why it cannot be trusted.

    A bare list of ``{"offset", "length"}`` byte ranges is the operator's word for the
    changes since the parent; ``{"since": RESTORE_POINT, "ranges": [...]}`` is trusted
    only when ``since`` is the parent. A map that does not fit the disk is not trusted.
    """
    try:
        document: Any = json.loads(text)
        if isinstance(document, dict):
            since, ranges = document.get("since"), document["ranges"]
            if since != parent.restore_point:
                return None, (
                    f"the changed-ranges map is since {since}, not since the parent"
                    f" {parent.restore_point}"
                )
        else:
            ranges = document
        if parent.disk_size != disk_size:
            return None, (
                f"the disk changed size since the parent ({parent.disk_size} -> {disk_size}"
                " bytes), so the changed-ranges map is not trusted"
            )
        wanted: set[int] = set()
        for extent in ranges:
            offset, length = int(extent["offset"]), int(extent["length"])
            if offset < 0 or length < 0 or offset + length > disk_size:
                return None, (
                    f"the changed-ranges map names bytes {offset}..{offset + length}"
                    f" beyond the disk's {disk_size}"
                )
            if length:
                wanted.update(range(offset // block_size, (offset + length - 1) // block_size + 1))
        return wanted, ""
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"the changed-ranges map is malformed ({exc})"
