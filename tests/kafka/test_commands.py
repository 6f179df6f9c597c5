"""Commands to a repository's owner on a real broker: malformed ones are answered with an
error and never stop the owner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from blockferry.transport import expiry
from tests.kafka.pipelines import REPO, running_pipeline
from tests.unit.repository.repo_helpers import backup, make_image

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(
    ("name", "arguments", "error", "code"),
    [
        (
            "commit",
            '{"job": 123, "session_id": "s", "disks": ["d"], "parent": null}',
            "invalid job name 123",
            "refused",
        ),
        ("restore-point", "{}", "restore-point", "internal"),  # typed arguments: refused
        ("verify", "not json", "arguments are not JSON", "refused"),
        ("restore-point", "[1]", "must be a JSON object", "refused"),
        ("list-restore-points", '{"job": ["a"]}', "invalid job name", "refused"),
        ("format-disk", "{}", "unknown command", "refused"),
        ("forget", "{}", "unknown command", "refused"),  # a private helper: never callable
        ("read", "{}", "unknown command", "refused"),
        ("reply", "{}", "unknown command", "refused"),
        (
            "restore-point",
            '{"restore_point": "20990101T000000Z-00000000"}',
            "no committed restore point '20990101T000000Z-00000000' in repository default",
            "not-found",
        ),
    ],
)
async def test_malformed_commands_are_answered_with_an_error(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    name: str,
    arguments: str,
    error: str,
    code: str,
) -> None:
    """Each refusal names its code; no answer shows the repository's path."""
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
        assert answer["code"] == code, answer
        assert str(tmp_path) not in answer["error"]
        assert described["ok"] is True, "the owner goes on after a bad command"
        assert json.loads(described["result"])["id"] == repo.config.id
        assert not running.task.done()


@pytest.mark.parametrize(
    ("topic", "name"),
    [("commands", "fixed-index"), ("commands", "restore"), ("requests", "gc")],
)
async def test_each_topic_takes_only_its_senders_commands(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, topic: str, name: str
) -> None:
    """The orchestrator's commands and the movers' requests come on topics of their own
    (so access rules can tell the senders apart): a command on the other's topic is
    refused, naming what that topic takes."""
    repo = Repository.init(tmp_path / "repo", block_size=256 * 1024, shard_count=1)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        mesh, replies = running.mesh, running.replies
        answer = replies.open("c")
        await mesh.producer.send_and_wait(
            getattr(mesh.topics, topic)(REPO),
            "Command",
            {"command_id": "c", "name": name, "arguments": "{}"},
        )
        async with asyncio.timeout(30):
            refused = (await answer.get()).fields
        assert (refused["ok"], refused["code"]) == (False, "refused")
        assert f"unknown command {name!r}" in refused["error"]


async def test_an_expired_command_is_refused_and_not_run(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A prune read long after it was sent (its caller gave up; a consumer group that lost
    its offsets reads it again) is refused and counted, and prunes nothing."""
    repo = Repository.init(tmp_path / "repo", block_size=256 * 1024, shard_count=1)
    points = [backup(repo, "j", {"d0": make_image(image)}).id for image in ("ab", "ba")]
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        mesh, replies = running.mesh, running.replies
        answer = replies.open("old")
        long_ago = expiry.now_ms() - 3600 * 1000
        await mesh.producer.send_and_wait(
            mesh.topics.commands(REPO),
            "Command",
            {
                "command_id": "old",
                "name": "prune",
                "arguments": json.dumps({"job": "j", "policy": {"keep_last": 1}}),
                "issued_at": long_ago,
                "expires_at": long_ago + 120 * 1000,
            },
        )
        async with asyncio.timeout(30):
            refused = (await answer.get()).fields
        assert (refused["ok"], refused["code"]) == (False, "refused")
        assert "prune: expired at " in refused["error"], refused
    assert sorted(p.id for p in Repository.open(repo.path).restore_points("j")) == sorted(points)
