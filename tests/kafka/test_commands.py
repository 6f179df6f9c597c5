"""Commands to a repository's owner on a real broker: malformed ones are answered with an
error and never stop the owner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from tests.kafka.pipelines import REPO, running_pipeline

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("commit", '{"job": 123, "session_id": "s", "disks": ["d"], "parent": null}', "commit"),
        ("restore-point", "{}", "restore-point"),
        ("verify", "not json", "verify"),
        ("restore-point", "[1]", "restore-point"),
        ("list-restore-points", '{"job": ["a"]}', "list-restore-points"),
        ("format-disk", "{}", "unknown command"),
        ("forget", "{}", "unknown command"),  # a private helper: never callable remotely
        ("read", "{}", "unknown command"),
        ("reply", "{}", "unknown command"),
        ("restore-point", '{"restore_point": "20990101T000000Z-00000000"}', "restore-point"),
    ],
)
async def test_malformed_commands_are_answered_with_an_error(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, name: str, arguments: str, error: str
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=256 * 1024, shard_count=1)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        mesh, replies = running.mesh, running.replies
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
        assert not running.task.done()
