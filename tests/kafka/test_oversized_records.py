"""Records whose numbers are beyond any disk (a disk of 2^62 bytes, two billion extents
records, blocks beyond the largest disk, a block claiming a gigabyte of plaintext) are
refused before anything is sized by them, on a real broker: the target side
dead-letters them and tells the source, a restore fails cleanly, and the consumer
carries on with the next good record. The process's peak memory stays small."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path
from typing import Any

import pytest
import zstandard

from blockferry.core import blocks
from blockferry.core.errors import BlockferryError
from blockferry.ingest.config import IngestConfig
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.transport.codec import signed64
from blockferry.transport.records import (
    Chunk,
    DeadLetter,
    DiskEnd,
    Extents,
    Message,
    Reply,
    RestoreBlock,
)
from tests.kafka.pipelines import REPO, running_pipeline
from tests.kafka.test_mesh_restore import IMAGE, leftovers, restore, tamper
from tests.unit.repository.repo_helpers import backup, make_image, root

pytestmark = pytest.mark.kafka

BLOCK = 256 * 1024
HUGE = 512 * 1024 * 1024
"""What a hostile record claims: far more than a test's memory may grow by."""
GROWTH_LIMIT = 128 * 1024 * 1024


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def huge_frame() -> bytes:
    """A small zstd frame that declares (and holds) HUGE bytes of zeros."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=HUGE)
    zeros = bytes(4 * 1024 * 1024)
    frame = b"".join(compressor.compress(zeros) for _ in range(HUGE // len(zeros)))
    return frame + compressor.flush()


def chunk(plain: bytes, key: bytes, **change: Any) -> Chunk:
    data = change.pop("data", blocks.compress(plain, 3))
    fields = {
        "session_id": "s",
        "digest": blocks.digest(plain, key),
        "compressed": True,
        "plain_size": len(plain),
        "checksum": signed64(blocks.checksum(data)),
        "data": data,
    }
    return Chunk(**{**fields, **change})


def end(session: str, extent_records: int, **change: Any) -> DiskEnd:
    fields = {
        "session_id": session,
        "task_id": f"{session}/d0",
        "job": "j",
        "disk": "d0",
        "disk_size": 2 * BLOCK + 100,
        "block_size": BLOCK,
        "extent_records": extent_records,
    }
    return DiskEnd(**{**fields, **change})


async def dead_letters(mesh: Mesh, count: int) -> list[DeadLetter]:
    consumer = mesh.consumer("dead-letters")
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        await consumer.assign_all_from_start(mesh.topics.dead_letter)
        async with asyncio.timeout(30):
            while len(letters) < count:
                polled = await consumer.poll(timeout_ms=500)
                letters += [r.value for r in polled if isinstance(r.value, DeadLetter)]
    finally:
        await consumer.stop()
    return letters


async def test_the_target_side_refuses_oversized_records_and_carries_on(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    before = peak_rss()
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    key = repo.config.dedupe_key
    config = IngestConfig(stored_wait_s=2.0, idle_seal_s=0.2)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, config) as running:
        mesh, replies = running.mesh, running.replies
        extents, chunks = mesh.topics.extents(REPO), mesh.topics.chunks(REPO)
        sessions = ("huge-disk", "huge-count", "bad-extents", "far-block", "good")
        queues = {s: replies.open(f"{s}/d0") for s in sessions}
        good = b"a good block " * 10000
        digest = blocks.digest(good, key)

        bad_chunks = [
            chunk(good, key, plain_size=2**31 - 1),  # a plaintext of 2 GiB claimed
            chunk(b"x", key, data=huge_frame()),  # a frame holding 512 MiB
        ]
        for one in [*bad_chunks, chunk(good, key)]:
            await mesh.producer.send_and_wait(chunks, one, key=one.digest)

        async def send(record: Extents | DiskEnd) -> None:
            await mesh.producer.send_and_wait(extents, record, key=record.session_id)

        def extent(session: str, block_list: list[int], digests: bytes) -> Extents:
            return Extents(session_id=session, disk="d0", seq=0, blocks=block_list, digests=digests)

        await send(end("huge-disk", 0, disk_size=2**62))
        await send(end("huge-count", 2**31 - 1))
        await send(extent("bad-extents", [0, 1], digest))  # one digest for two
        await send(end("bad-extents", 1))
        await send(extent("far-block", [2**40], digest))
        await send(end("far-block", 1))
        await send(extent("good", [0], digest))
        await send(end("good", 1))

        answers: dict[str, Reply] = {}
        for session, queue in queues.items():
            async with asyncio.timeout(30):
                answer = (await queue.get()).value
            assert isinstance(answer, Reply)
            answers[session] = answer
        assert answers["good"].ok, answers["good"]
        assert answers["good"].name == "disk-stored"
        errors = {s: a.error for s, a in answers.items() if s != "good"}
        assert not any(a.ok for s, a in answers.items() if s != "good")
        assert "disk size 4611686018427387904 is out of range" in errors["huge-disk"], errors
        assert "counts 2147483647 extents records for a disk of 3 blocks" in errors["huge-count"]
        assert "expects 1 extents records, 0 arrived" in errors["bad-extents"], errors
        assert "expects 1 extents records, 0 arrived" in errors["far-block"], errors

        letters = await dead_letters(mesh, 6)
        reasons = sorted(letter.reason for letter in letters)
        assert len(reasons) == 6, reasons
        assert any("plain size 2147483647 out of range" in r for r in reasons), reasons
        assert any(f"frame declares {HUGE} bytes" in r for r in reasons), reasons
        assert any("has 32 digest bytes for 2 blocks" in r for r in reasons), reasons
        assert any("names blocks 1099511627776..1099511627776, beyond" in r for r in reasons)
        assert any("disk size 4611686018427387904 is out of range" in r for r in reasons)
        assert any("counts 2147483647 extents records" in r for r in reasons), reasons
        assert repo.locate(digest) is not None, "the good chunk after the bad ones is stored"
        staged = sorted(p.parent.name for p in (root(repo) / "staging").rglob("*.fidx"))
        assert staged == ["good"]
    grown = peak_rss() - before
    assert grown < GROWTH_LIMIT, f"peak memory grew by {grown >> 20} MiB"


def inflate(f: RestoreBlock) -> list[Message]:
    """Block 2 of the stream claims (and holds) a plaintext of HUGE bytes."""
    if f.block != 2:
        return [f]
    data = huge_frame()
    changes = {
        "compressed": True,
        "plain_size": HUGE,
        "data": data,
        "checksum": signed64(blocks.checksum(data)),
    }
    return [f.model_copy(update=changes)]


async def test_a_restore_block_claiming_a_huge_plaintext_fails_the_restore_cleanly(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    rp = backup(repo, "j", {"d0": make_image(IMAGE)}).id
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "restored.img"
    before = peak_rss()
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        tamper(running.mesh.bulk_producer, inflate)
        with pytest.raises(BlockferryError, match=f"block 2 claims {HUGE} plaintext bytes"):
            await restore(running, rp, dest)
    grown = peak_rss() - before
    assert grown < GROWTH_LIMIT, f"peak memory grew by {grown >> 20} MiB"
    assert not dest.exists(), "nothing is published under the destination's name"
    assert leftovers(out, dest) == [], "the temporary file is removed"
