"""Start-up on a repository with a damaged restore point, on a real broker: the target side
names it (log, metric) and serves the rest; garbage collection refuses and deletes nothing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository, check, layout
from blockferry.repository.retention import Policy
from blockferry.transport import commands as cmd
from blockferry.transport.records import Reply
from tests.kafka.pipelines import REPO, newest_records, running_pipeline, write_pack
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    file_of,
    flip_byte,
    make_image,
    pack_file,
)

pytestmark = pytest.mark.kafka


async def test_start_up_names_a_damaged_restore_point_and_gc_refuses(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=1)
    damaged = backup(repo, "a", {"sda": make_image("ab")})
    backup(repo, "b", {"sda": make_image("cd")})
    backup(repo, "b", {"sda": make_image("ef")})
    repo.prune("b", Policy(keep_last=1))  # c and d are garbage
    path = file_of(repo, layout.restore_point_file("a", damaged.id))
    path.write_text(path.read_text().replace('"job": "a"', '"job": "x"'))
    packs = repo.sealed_pack_ids()

    caplog.set_level(logging.ERROR)
    config = IngestConfig(gc_grace=0)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, config) as running:
        assert f"restorepoints/a/{damaged.id}/restorepoint.json" in caplog.text
        assert "set-aside" in caplog.text
        mesh, replies = running.mesh, running.replies
        described, collected = replies.open("describe"), replies.open("gc")
        topic = mesh.topics.commands(REPO)
        await mesh.commands.send(topic, cmd.DESCRIBE, cmd.DescribeArguments(), 60, "describe")
        await mesh.commands.send(topic, cmd.GC, cmd.GcArguments(), 60, "gc")
        async with asyncio.timeout(30):
            served = (await described.get()).value
            refused = (await collected.get()).value
        assert isinstance(served, Reply) and served.ok is True, "it serves the rest"
        assert isinstance(refused, Reply) and refused.ok is False
        assert "nothing was deleted" in refused.error
        assert f"restorepoints/a/{damaged.id}/restorepoint.json" in refused.error
        assert refused.result == b""
    assert repo.sealed_pack_ids() == packs


async def test_start_up_survives_a_pack_with_a_damaged_footer(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The footer's magic is gone: the role starts (it reads no pack), the chunks its
    index file lists are published and served like any other, and check names it."""
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=1)
    healthy = write_pack(repo, [1, 2])
    damaged = write_pack(repo, [3, 4])
    flip_byte(pack_file(repo, damaged[0].pack_id), -1)

    caplog.set_level(logging.ERROR)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        assert not running.task.done()
        newest = await newest_records(running.mesh)
    assert {newest[e.digest.hex()] for e in healthy + damaged} == set(healthy + damaged)
    assert repo.read_block(damaged[1].digest)
    assert any(damaged[0].pack_id in problem.path for problem in check(repo).problems)
