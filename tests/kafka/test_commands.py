"""Commands to a repository's owner on a real broker: malformed ones are answered with an
error and never stop the owner."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blockferry.ingest.config import IngestConfig
from blockferry.ingest.metrics import IngestMetrics
from blockferry.ingest.pipeline import RepositoryPipeline
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.settings import CommonSettings, KafkaSettings

pytestmark = pytest.mark.kafka

REPO = "default"


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("commit", '{"job": 123, "session_id": "s", "disks": ["d"], "parent": null}', "commit"),
        ("restore-point", "{}", "restore-point"),
        ("verify", "not json", "verify"),
        ("restore-point", "[1]", "restore-point"),
        ("list-restore-points", '{"job": ["a"]}', "list-restore-points"),
        ("format-disk", "{}", "unknown command"),
        ("restore-point", '{"restore_point": "20990101T000000Z-00000000"}', "restore-point"),
    ],
)
async def test_malformed_commands_are_answered_with_an_error(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, name: str, arguments: str, error: str
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=256 * 1024, shard_count=1)
    settings = CommonSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    )
    mesh = Mesh(settings, "test")
    await mesh.start()
    pool = ThreadPoolExecutor(2)
    pipeline = RepositoryPipeline(
        mesh, repo, REPO, IngestConfig(), IngestMetrics(CollectorRegistry(), "test"), pool
    )
    await pipeline.start()
    running = asyncio.create_task(pipeline.run())
    replies = mesh.mailbox("replies", mesh.topics.replies(REPO), "correlation_id")
    await replies.start()
    reading = asyncio.create_task(replies.run())
    try:
        bad, good = replies.open("bad"), replies.open("good")
        topic = mesh.topics.commands(REPO)
        await mesh.producer.send_and_wait(
            topic, "Command", {"command_id": "bad", "name": name, "arguments": arguments}
        )
        await mesh.producer.send_and_wait(
            topic, "Command", {"command_id": "good", "name": "describe", "arguments": "{}"}
        )
        async with asyncio.timeout(30):
            answer = (await bad.get()).fields
            described = (await good.get()).fields
        assert answer["ok"] is False
        assert error in answer["error"]
        assert described["ok"] is True, "the owner goes on after a bad command"
        assert json.loads(described["result"])["id"] == repo.config.id
        assert not running.done()
    finally:
        running.cancel()
        reading.cancel()
        await asyncio.gather(running, reading, return_exceptions=True)
        await replies.stop()
        await pipeline.stop()
        await mesh.stop()
        pool.shutdown()
