"""Commands to a repository's owner on a real broker: malformed ones are answered with an
error and never stop the owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from blockferry.transport import commands as cmd
from blockferry.transport import expiry
from blockferry.transport.codec import Codec
from blockferry.transport.records import Command, Reply
from tests.kafka.pipelines import REPO, running_pipeline
from tests.unit.repository.repo_helpers import backup, make_image, root

pytestmark = pytest.mark.kafka


CODEC = Codec()
NO_POINT = "20990101T000000Z-00000000"


@pytest.mark.parametrize(
    ("name", "arguments", "error", "code"),
    [
        (
            "commit",
            CODEC.encode(
                cmd.CommitArguments(restore_point=None, session_id="s", job="../x", disks=["d"])
            ),
            "invalid job name '../x'",
            "refused",
        ),
        (
            "restore-point",
            CODEC.encode(cmd.DiscardArguments(session_id="s")),
            "expected a RestorePointArguments record, got a DiscardArguments",
            "refused",
        ),
        ("verify", b"not avro", "not Avro single-object encoded", "refused"),
        ("verify", b"\xc3\x01" + bytes(8), "unknown schema fingerprint", "refused"),
        (
            "list-restore-points",
            CODEC.encode(cmd.ListRestorePointsArguments(job="a/b")),
            "invalid job name",
            "refused",
        ),
        ("format-disk", b"", "unknown command", "refused"),
        ("forget", b"", "unknown command", "refused"),  # a private helper: never callable
        ("read", b"", "unknown command", "refused"),
        ("reply", b"", "unknown command", "refused"),
        (
            "restore-point",
            CODEC.encode(cmd.RestorePointArguments(restore_point=NO_POINT)),
            f"no committed restore point '{NO_POINT}' in repository default",
            "not-found",
        ),
    ],
)
async def test_malformed_commands_are_answered_with_an_error(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    name: str,
    arguments: bytes,
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
            topic, Command(command_id="bad", name=name, arguments=arguments)
        )
        describe = CODEC.encode(cmd.DescribeArguments())
        await mesh.producer.send_and_wait(
            topic, Command(command_id="good", name="describe", arguments=describe)
        )
        async with asyncio.timeout(30):
            answer = (await bad.get()).value
            described = (await good.get()).value
        assert isinstance(answer, Reply) and isinstance(described, Reply)
        assert answer.ok is False
        assert error in answer.error, answer
        assert answer.code == code, answer
        assert str(tmp_path) not in answer.error
        assert described.ok is True, "the owner goes on after a bad command"
        result = CODEC.decode_as(described.result, cmd.RepositoryDescription)
        assert result.id == repo.config.id
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
            getattr(mesh.topics, topic)(REPO), Command(command_id="c", name=name, arguments=b"")
        )
        async with asyncio.timeout(30):
            refused = (await answer.get()).value
        assert isinstance(refused, Reply)
        assert (refused.ok, refused.code) == (False, "refused")
        assert f"unknown command {name!r}" in refused.error


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
        prune = cmd.PruneArguments(job="j", policy=cmd.RetentionPolicy(keep_last=1))
        old = Command(
            command_id="old",
            name="prune",
            arguments=CODEC.encode(prune),
            issued_at=long_ago,
            expires_at=long_ago + 120 * 1000,
        )
        await mesh.producer.send_and_wait(mesh.topics.commands(REPO), old)
        async with asyncio.timeout(30):
            refused = (await answer.get()).value
        assert isinstance(refused, Reply)
        assert (refused.ok, refused.code) == (False, "refused")
        assert "prune: expired at " in refused.error, refused
    assert sorted(p.id for p in Repository.open(root(repo)).restore_points("j")) == sorted(points)


async def test_a_command_of_an_earlier_run_of_its_session_is_refused(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Once a command of a session's second run (an orchestrator carried the session on)
    was read, a command of the first run read late is refused, naming both runs."""
    repo = Repository.init(tmp_path / "repo", block_size=256 * 1024, shard_count=1)
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        mesh, replies = running.mesh, running.replies
        answers = {run: replies.open(f"run-{run}") for run in (2, 1)}
        for run in (2, 1):
            await mesh.commands.send(
                mesh.topics.commands(REPO),
                cmd.DISCARD,
                cmd.DiscardArguments(session_id="s"),
                60,
                f"run-{run}",
                epoch=expiry.Epoch("s", run),
            )
        async with asyncio.timeout(30):
            newer, older = [(await answers[run].get()).value for run in (2, 1)]
        assert isinstance(newer, Reply) and newer.ok, newer
        assert isinstance(older, Reply)
        assert (older.ok, older.code) == (False, "refused")
        assert older.error == "discard: sent by run 1 of session s, which run 2 replaced: not done"
