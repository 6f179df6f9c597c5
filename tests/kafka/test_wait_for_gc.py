"""While a garbage collection or prune holds the repository's exclusive lock, a disk's end
and a commit wait for it (holding no thread) instead of failing their task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blockferry.core import blocks
from blockferry.ingest.config import IngestConfig
from blockferry.repository import LockKind, Repository, RepositoryLocks
from blockferry.transport import commands as cmd
from blockferry.transport.records import DiskEnd, Extents, Reply
from tests.kafka.pipelines import REPO, running_pipeline

pytestmark = pytest.mark.kafka

BLOCK = 256 * 1024


async def test_a_disk_end_and_a_commit_wait_for_gc(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    config = IngestConfig(stored_wait_s=2.0, idle_seal_s=0.2, workers=1)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, config) as running:
        mesh, replies = running.mesh, running.replies
        # another process's garbage collection
        gc_lock = RepositoryLocks(repo.storage, refresh_every=0).acquire(
            LockKind.EXCLUSIVE, purpose="gc"
        )
        topic = mesh.topics.extents(REPO)
        disk = replies.open("s1/d0")
        extents = Extents(session_id="s1", disk="d0", seq=0, blocks=[0], digests=bytes(32))
        end = DiskEnd(
            session_id="s1",
            task_id="s1/d0",
            job="j",
            disk="d0",
            disk_size=BLOCK,
            block_size=BLOCK,
            extent_records=1,
        )
        await mesh.producer.send_and_wait(topic, extents, key="s1/d0")
        await mesh.producer.send_and_wait(topic, end, key="s1/d0")
        await asyncio.sleep(5)
        assert disk.empty(), "the disk's end neither failed nor finished under GC's lock"

        # the one ingestion thread is not held by the waiting disk end
        described = replies.open("describe")
        commands = mesh.topics.commands(REPO)
        await mesh.commands.send(commands, cmd.DESCRIBE, cmd.DescribeArguments(), 60, "describe")
        async with asyncio.timeout(10):
            served = (await described.get()).value
        assert isinstance(served, Reply) and served.ok is True

        gc_lock.release()
        async with asyncio.timeout(30):
            stored = (await disk.get()).value
        assert isinstance(stored, Reply)
        assert (stored.name, stored.ok) == ("disk-stored", True)

        # a commit arriving during the next GC waits for it too
        gc_lock = RepositoryLocks(repo.storage, refresh_every=0).acquire(
            LockKind.EXCLUSIVE, purpose="gc"
        )
        committed = replies.open("commit")
        arguments = cmd.CommitArguments(restore_point=None, job="j", session_id="s1", disks=["d0"])
        await mesh.commands.send(commands, cmd.COMMIT, arguments, 60, "commit")
        await asyncio.sleep(5)
        assert committed.empty()
        gc_lock.release()
        async with asyncio.timeout(30):
            answer = (await committed.get()).value
        assert isinstance(answer, Reply)
        assert answer.ok is True, answer.error
        point = repo.restore_point(mesh.codec.decode_as(answer.result, cmd.RestorePointInfo).id)
        assert list(repo.read_fixed_index(point, "d0").digests) == [blocks.ZERO_DIGEST]
