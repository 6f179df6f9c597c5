"""Fixed-index assembly on a real broker: missing blocks are asked for again, a disk its
source gave up on is dropped, and the extents offsets move past both."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from blockferry.core import blocks
from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from blockferry.transport.codec import signed64
from tests.kafka.offsets import committed_and_end
from tests.kafka.pipelines import REPO, running_pipeline

pytestmark = pytest.mark.kafka

BLOCK = 256 * 1024


def _end(session: str, extent_records: int, attempt: int = 0, error: str = "") -> dict[str, Any]:
    return {
        "session_id": session,
        "task_id": f"{session}/d0",
        "job": "j",
        "disk": "d0",
        "disk_size": 2 * BLOCK + 100,
        "block_size": BLOCK,
        "extent_records": extent_records,
        "parent": None,
        "attempt": attempt,
        "error": error,
    }


async def test_missing_blocks_resume_points_and_given_up_disks(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=2)
    config = IngestConfig(stored_wait_s=2.0, idle_seal_s=0.2)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, config) as running:
        mesh, replies = running.mesh, running.replies
        plain = b"block one" * 20000
        digest = blocks.digest(plain, repo.config.dedupe_key)
        extents = {
            "session_id": "s1",
            "disk": "d0",
            "seq": 0,
            "blocks": [0, 2],
            "digests": digest + blocks.ZERO_DIGEST,
        }
        topic = mesh.topics.extents(REPO)
        queue = replies.open("s1/d0")
        await mesh.producer.send_and_wait(topic, "Extents", extents, key="s1/d0")
        await mesh.producer.send_and_wait(topic, "DiskEnd", _end("s1", 1), key="s1/d0")

        async with asyncio.timeout(30):
            missing = (await queue.get()).fields
        assert (missing["name"], missing["ok"]) == ("missing-blocks", False)
        assert json.loads(missing["result"]) == {"blocks": [0], "attempt": 0}

        data = blocks.compress(plain, 3)
        await mesh.producer.send_and_wait(
            mesh.topics.chunks(REPO),
            "Chunk",
            {
                "session_id": "s1",
                "digest": digest,
                "compressed": True,
                "plain_size": len(plain),
                "checksum": signed64(blocks.checksum(data)),
                "data": data,
            },
            key=digest,
        )
        await mesh.producer.send_and_wait(topic, "DiskEnd", _end("s1", 1, attempt=1), key="s1/d0")
        async with asyncio.timeout(30):
            stored = (await queue.get()).fields
        assert (stored["name"], stored["ok"]) == ("disk-stored", True)
        assert json.loads(stored["result"])["attempt"] == 1

        # A mover taking over asks where to resume: s1 is stored, s3 holds one durable
        # record of two (the second names a block whose chunk never came), s9 is unknown.
        for session in ("s3", "s9"):
            replies.open(f"{session}/d0")
        await mesh.producer.send_and_wait(
            topic, "Extents", {**extents, "session_id": "s3", "blocks": [0, 1]}, key="s3/d0"
        )
        lost = blocks.digest(b"never sent" * 100, repo.config.dedupe_key)
        await mesh.producer.send_and_wait(
            topic,
            "Extents",
            {**extents, "session_id": "s3", "seq": 1, "blocks": [2], "digests": lost},
            key="s3/d0",
        )
        answers = {}
        for session in ("s1", "s3", "s9"):
            query = {"session_id": session, "disk": "d0", "attempt": 1}
            await mesh.producer.send_and_wait(topic, "ResumeQuery", query, key=f"{session}/d0")
        for session in ("s1", "s3", "s9"):
            async with asyncio.timeout(30):
                reply = (await replies.open(f"{session}/d0").get()).fields
            assert reply["name"] == "resume-point"
            answers[session] = json.loads(reply["result"])
        assert answers == {
            "s1": {"stored": True, "attempt": 1},
            "s3": {"block": 2, "extent_records": 1, "attempt": 1},
            "s9": {"block": 0, "extent_records": 0, "attempt": 1},
        }
        await mesh.producer.send_and_wait(
            topic, "DiskEnd", _end("s3", 2, error="moved on"), key="s3/d0"
        )

        # A source that gave up after sending extents: nothing is answered, nothing staged.
        given_up = replies.open("s2/d0")
        await mesh.producer.send_and_wait(
            topic, "Extents", {**extents, "session_id": "s2"}, key="s2/d0"
        )
        await mesh.producer.send_and_wait(
            topic, "DiskEnd", _end("s2", 0, error="read failed"), key="s2/d0"
        )
        await asyncio.sleep(3)
        assert given_up.empty()

        committed, end = await committed_and_end(
            kafka_bootstrap, f"{topic_prefix}.{REPO}.assembly", topic, 2
        )
        assert committed == end, "offsets move past both"
        staged = sorted(
            p.relative_to(repo.path).as_posix() for p in (repo.path / "staging").rglob("*.fidx")
        )
        assert staged == ["staging/s1/d0.fidx"]
        fidx = repo.read_fixed_index  # the staged index is read when committed
        point = repo.commit_restore_point(
            job="j", session_id="s1", disks=["d0"], parent=None, stats={}
        )
        index = fidx(point, "d0")
        assert list(index.digests) == [digest, blocks.ZERO_DIGEST, blocks.ZERO_DIGEST]
