"""An operator's changed-ranges map on its way from the orchestrator to a source mover.

A map may list any number of byte ranges (hundreds of thousands from a busy
database's write log), far more than one record may carry on a topic with a broker's
default limit (``message.max.bytes``, 1 MiB). So the map never travels inside a Task
or a SessionRecord: the orchestrator publishes it once, as ChangedRangesPage records
on the tasks topic keyed by the session (one partition, in order), before the
session's first task; the Task, and the session's plan on the sessions topic, carry
only a reference (``ChangedRangesRef``: the map's id, partition, first and last
offset). A mover reads the pages with a consumer of its own from the first offset,
page by page, whichever mover takes the task and however often it is offered. The
pages stay as long as the tasks topic keeps records; a map read after they are gone
is an error the mover reports (it then compares every block's digest instead).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Sequence

from blockferry.core.errors import SessionError
from blockferry.mesh import Mesh
from blockferry.transport.kafka import Partition
from blockferry.transport.records import ChangedRangesPage, ChangedRangesRef

RANGES_PER_PAGE = 16384
"""Ranges per page: two Avro longs of at most 10 bytes each, so a page stays under
330 KiB whatever its values, well within a broker's default 1 MiB."""


def pages(
    session_id: str, map_id: str, since: str | None, ranges: Sequence[tuple[int, int]]
) -> list[ChangedRangesPage]:
    """The ChangedRangesPage records of a map (one, empty, for a map with no range)."""
    count = max(1, -(-len(ranges) // RANGES_PER_PAGE))
    out = []
    for page in range(count):
        part = ranges[page * RANGES_PER_PAGE : (page + 1) * RANGES_PER_PAGE]
        out.append(
            ChangedRangesPage(
                session_id=session_id,
                map_id=map_id,
                page=page,
                pages=count,
                since=since,
                offsets=[offset for offset, _ in part],
                lengths=[length for _, length in part],
            )
        )
    return out


async def publish(
    mesh: Mesh, session_id: str, since: str | None, ranges: Sequence[tuple[int, int]]
) -> ChangedRangesRef:
    """Publish a map's pages on the tasks topic; return the reference a Task carries."""
    map_id = uuid.uuid4().hex
    sent = [
        await mesh.producer.send(mesh.topics.tasks, page, key=session_id)
        for page in pages(session_id, map_id, since, ranges)
    ]
    where = await asyncio.gather(*sent)
    return ChangedRangesRef(
        map_id=map_id,
        partition=where[0].partition,
        first_offset=where[0].offset,
        last_offset=where[-1].offset,
        pages=len(where),
        ranges=len(ranges),
    )


async def read(
    mesh: Mesh, ref: ChangedRangesRef, timeout: float
) -> AsyncGenerator[tuple[str | None, list[int], list[int]]]:
    """Each page of the map ``ref`` names, in order: (since, offsets, lengths).

    Raises:
        SessionError: a page is missing (gone with the topic's retention) or the pages
            did not all come within ``timeout`` seconds.
    """
    what = f"changed-ranges map {ref.map_id}"
    consumer = mesh.consumer(f"changed-ranges-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        tp = Partition(mesh.topics.tasks, ref.partition)
        await consumer.read_from(tp, ref.first_offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        expected = 0
        while expected < ref.pages:
            if await consumer.position(tp) > ref.last_offset:
                raise SessionError(
                    f"reading {what}: page {expected} of {ref.pages} is not on"
                    f" {mesh.topics.tasks} (past the topic's retention?)"
                )
            if loop.time() > deadline:
                raise SessionError(f"reading {what}: its pages did not come in {timeout:.0f} s")
            for record in await consumer.poll(timeout_ms=500, max_records=4):
                f = record.value
                if not isinstance(f, ChangedRangesPage) or f.map_id != ref.map_id:
                    continue
                if f.page != expected or len(f.offsets) != len(f.lengths):
                    raise SessionError(f"reading {what}: page {expected} is missing or malformed")
                expected += 1
                yield f.since, f.offsets, f.lengths
    finally:
        await consumer.stop()
