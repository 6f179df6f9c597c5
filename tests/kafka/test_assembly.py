"""Fixed-index assembly on a real broker: missing blocks are asked for again, a disk its
source gave up on is dropped, and the extents offsets move past both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blockferry.core import blocks
from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from blockferry.transport.codec import Codec, signed64
from blockferry.transport.commands import DiskStored, MissingBlocks, ResumePoint
from blockferry.transport.kafka import Record
from blockferry.transport.records import Chunk, DiskEnd, Extents, Message, Reply, ResumeQuery
from tests.kafka.offsets import committed_and_end
from tests.kafka.pipelines import REPO, running_pipeline
from tests.unit.repository.repo_helpers import root

pytestmark = pytest.mark.kafka

BLOCK = 256 * 1024
CODEC = Codec()


def _end(session: str, extent_records: int, attempt: int = 0, error: str = "") -> DiskEnd:
    return DiskEnd(
        session_id=session,
        task_id=f"{session}/d0",
        job="j",
        disk="d0",
        disk_size=2 * BLOCK + 100,
        block_size=BLOCK,
        extent_records=extent_records,
        parent=None,
        attempt=attempt,
        error=error,
    )


def _answer(record: Record) -> tuple[str, bool, Message]:
    """A disk answer's name, whether ok, and what it carries."""
    reply = record.value
    assert isinstance(reply, Reply), record
    return reply.name, reply.ok, CODEC.decode(reply.result)


async def test_missing_blocks_resume_points_and_given_up_disks(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=2)
    config = IngestConfig(stored_wait_s=2.0, idle_seal_s=0.2)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, config) as running:
        mesh, replies = running.mesh, running.replies
        plain = b"block one" * 20000
        digest = blocks.digest(plain, repo.config.dedupe_key)
        extents = Extents(
            session_id="s1", disk="d0", seq=0, blocks=[0, 2], digests=digest + blocks.ZERO_DIGEST
        )
        topic = mesh.topics.extents(REPO)
        queue = replies.open("s1/d0")
        await mesh.producer.send_and_wait(topic, extents, key="s1/d0")
        await mesh.producer.send_and_wait(topic, _end("s1", 1), key="s1/d0")

        async with asyncio.timeout(30):
            missing = _answer(await queue.get())
        assert missing == ("missing-blocks", False, MissingBlocks(attempt=0, blocks=[0]))

        data = blocks.compress(plain, 3)
        chunk = Chunk(
            session_id="s1",
            digest=digest,
            compressed=True,
            plain_size=len(plain),
            checksum=signed64(blocks.checksum(data)),
            data=data,
        )
        await mesh.producer.send_and_wait(mesh.topics.chunks(REPO), chunk, key=digest)
        await mesh.producer.send_and_wait(topic, _end("s1", 1, attempt=1), key="s1/d0")
        async with asyncio.timeout(30):
            stored = _answer(await queue.get())
        assert stored == ("disk-stored", True, DiskStored(attempt=1, blocks=3))

        # A mover taking over asks where to resume: s1 is stored, s3 holds one durable
        # record of two (the second names a block whose chunk never came), s9 is unknown.
        for session in ("s3", "s9"):
            replies.open(f"{session}/d0")
        s3 = extents.model_copy(update={"session_id": "s3", "blocks": [0, 1]})
        await mesh.producer.send_and_wait(topic, s3, key="s3/d0")
        lost = blocks.digest(b"never sent" * 100, repo.config.dedupe_key)
        s3_lost = s3.model_copy(update={"seq": 1, "blocks": [2], "digests": lost})
        await mesh.producer.send_and_wait(topic, s3_lost, key="s3/d0")
        answers = {}
        for session in ("s1", "s3", "s9"):
            query = ResumeQuery(session_id=session, disk="d0", attempt=1)
            await mesh.producer.send_and_wait(topic, query, key=f"{session}/d0")
        for session in ("s1", "s3", "s9"):
            async with asyncio.timeout(30):
                name, ok, answers[session] = _answer(await replies.open(f"{session}/d0").get())
            assert (name, ok) == ("resume-point", True)
        assert answers == {
            "s1": ResumePoint(attempt=1, stored=True),
            "s3": ResumePoint(attempt=1, block=2, extent_records=1),
            "s9": ResumePoint(attempt=1, block=0, extent_records=0),
        }
        await mesh.producer.send_and_wait(topic, _end("s3", 2, error="moved on"), key="s3/d0")

        # A source that gave up after sending extents: nothing is answered, nothing staged.
        given_up = replies.open("s2/d0")
        s2 = extents.model_copy(update={"session_id": "s2"})
        await mesh.producer.send_and_wait(topic, s2, key="s2/d0")
        await mesh.producer.send_and_wait(topic, _end("s2", 0, error="read failed"), key="s2/d0")
        await asyncio.sleep(3)
        assert given_up.empty()

        committed, end = await committed_and_end(
            kafka_bootstrap, f"{topic_prefix}.{REPO}.assembly", topic, 2
        )
        assert committed == end, "offsets move past both"
        staged = sorted(
            p.relative_to(root(repo)).as_posix() for p in (root(repo) / "staging").rglob("*.fidx")
        )
        assert staged == ["staging/s1/d0.fidx"]
        fidx = repo.read_fixed_index  # the staged index is read when committed
        point = repo.commit_restore_point(
            job="j", session_id="s1", disks=["d0"], parent=None, stats={}
        )
        index = fidx(point, "d0")
        assert list(index.digests) == [digest, blocks.ZERO_DIGEST, blocks.ZERO_DIGEST]
