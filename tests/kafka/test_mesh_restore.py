"""A mesh restore on a real broker, with the restore stream tampered with on its way
from the repository's owner to the source mover: every block is checked against the
restore point's fixed index, the set of blocks must be exactly the expected one,
records of another attempt are ignored, and nothing is published under the
destination's name unless it is whole and right."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from blockferry.core.blocks import digest
from blockferry.core.errors import BlockferryError
from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from blockferry.repository.pack import CHUNK_HEADER
from blockferry.settings import BulkClient
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.source_mover.restore import RestoreRun
from blockferry.source_mover.settings import SourceMoverConfig
from blockferry.transport.kafka import Producer
from blockferry.transport.records import (
    Message,
    RestoreBlock,
    RestoreEnd,
    RestoreStart,
    Task,
    TaskKind,
)
from tests.kafka.pipelines import REPO, RunningPipeline, newest_records, running_pipeline
from tests.unit.repository.repo_helpers import backup, block, flip_byte, make_image, pack_file

pytestmark = pytest.mark.kafka

BLOCK = 256 * 1024
IMAGE = "abcdefAB0gh"
"""Eleven blocks: random, compressible, one zero block (8)."""

Change = Callable[[RestoreBlock], list[Message]]
"""What the stream carries instead of one RestoreBlock."""


def tamper(producer: Producer, change: Change) -> None:
    """Make the owner's producer send ``change(fields)`` instead of each RestoreBlock."""
    real = producer.send

    async def send(
        topic: str, message: Message | None, key: Any = None, partition: Any = None
    ) -> asyncio.Future[Any]:
        if not isinstance(message, RestoreBlock):
            return await real(topic, message, key, partition)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        for other in change(message):
            future = await real(topic, other, key, partition)
        return future

    producer.send = send  # type: ignore[method-assign]


async def restore(running: RunningPipeline, rp: str, dest: Path, **task: Any) -> RestoreRun:
    """Restore disk d0 of ``rp`` to ``dest`` as a source mover would."""
    with ThreadPoolExecutor(2) as pool:
        run = RestoreRun(
            running.mesh,
            SourceMoverConfig(),
            SourceMoverMetrics(CollectorRegistry()),
            pool,
            Task(
                task_id=f"s-{dest.name}/d0",
                session_id=f"s-{dest.name}",
                kind=TaskKind.restore,
                attempt=0,
                repository=REPO,
                job="j",
                disk="d0",
                path=str(dest),
                restore_point=rp,
                **task,
            ),
            running.repo.config.dedupe_key,
            running.replies,
            [dest.parent],
        )
        async with asyncio.timeout(60):
            await run.run()
        return run


def drop(block: int) -> Change:
    return lambda f: [] if f.block == block else [f]


def duplicate(block: int) -> Change:
    return lambda f: [f] * (2 if f.block == block else 1)


def both(first: Change, second: Change) -> Change:
    return lambda f: [h for g in first(f) if isinstance(g, RestoreBlock) for h in second(g)]


def renumber(block: int, to: int) -> Change:
    return lambda f: [f.model_copy(update={"block": to}) if f.block == block else f]


def leftovers(folder: Path, dest: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{dest.name}"))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (drop(3), r"1 block: block 3 \(bytes \[786432, 1048576\)\) never arrived"),
        (both(duplicate(1), drop(3)), r"block 3 \(bytes \[786432, 1048576\)\) never arrived"),
        (renumber(4, 5), r"block 5 \(bytes \[1310720, 1572864\)\) arrived with digest"),
        (renumber(2, 8), "block 8, which the fixed index does not name as a data block"),
    ],
    ids=["dropped", "duplicate-and-dropped", "renumbered", "renumbered-onto-a-zero-block"],
)
async def test_a_tampered_stream_fails_naming_the_block_and_publishes_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, change: Change, error: str
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    rp = backup(repo, "j", {"d0": make_image(IMAGE)}).id
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "restored.img"
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        tamper(running.mesh.bulk_producer, change)
        with pytest.raises(BlockferryError, match=error):
            await restore(running, rp, dest)
    assert not dest.exists(), "nothing is published under the destination's name"
    assert leftovers(out, dest) == [], "the temporary file is removed"


@pytest.mark.parametrize("bulk_client", ["librdkafka", "aiokafka"])
async def test_duplicates_are_ignored_and_other_attempts_records_too(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    bulk_client: BulkClient,
) -> None:
    """Another attempt of the same session streams at the same time (its own start,
    copies of the blocks, an early end): this attempt writes its own stream only."""
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    image = make_image(IMAGE, tail=12345)
    rp = backup(repo, "j", {"d0": image}).id
    dest = tmp_path / "restored.img"

    def other_attempt(f: RestoreBlock) -> list[Message]:
        session = f.session_id
        other = "another-attempt"
        records: list[Message] = [f, f.model_copy(update={"attempt_id": other})]
        if f.block == 0:
            start = RestoreStart(
                session_id=session,
                disk="d0",
                disk_size=len(image),
                block_size=BLOCK,
                attempt_id=other,
            )
            records.insert(0, start)
        if f.block == 2:
            records.append(f.model_copy(update={"block": 3, "attempt_id": other}))
            records.append(f)  # a duplicate of this attempt's own
        if f.block == 4:
            records.append(RestoreEnd(session_id=session, blocks_sent=3, attempt_id=other))
        return records

    pipeline = running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig(), bulk_client)
    async with pipeline as running:
        tamper(running.mesh.bulk_producer, other_attempt)
        run = await restore(running, rp, dest)
    assert dest.read_bytes() == image
    assert run.counters["blocks_written"] == len(IMAGE) - IMAGE.count("0") + 1  # and the tail
    assert run.counters["blocks_duplicate"] == 1
    assert leftovers(tmp_path, dest) == []


async def test_a_newer_attempt_stops_the_older_writer(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A RestoreStart of a higher task attempt (another mover took the task over) stops
    this attempt, which removes its temporary file."""
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    rp = backup(repo, "j", {"d0": make_image(IMAGE)}).id
    dest = tmp_path / "restored.img"

    def newer_attempt(f: RestoreBlock) -> list[Message]:
        if f.block != 5:
            return [f]
        newer = RestoreStart(
            session_id=f.session_id,
            disk="d0",
            disk_size=len(IMAGE) * BLOCK,
            block_size=BLOCK,
            attempt_id="newer",
            attempt=1,
        )
        return [newer, f]

    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        tamper(running.mesh.bulk_producer, newer_attempt)
        with pytest.raises(BlockferryError, match="attempt 1 of this task started elsewhere"):
            await restore(running, rp, dest)
    assert not dest.exists()
    assert leftovers(tmp_path, dest) == []


@pytest.mark.parametrize("allow_holes", [False, True])
async def test_a_damaged_chunk_is_named_or_left_as_a_listed_hole(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, allow_holes: bool
) -> None:
    """A byte flipped inside a stored chunk: the restore fails naming the block and its
    byte range, or, with allow_holes, writes everything else and lists the hole."""
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK, shard_count=1)
    image = make_image(IMAGE)
    rp = backup(repo, "j", {"d0": image}).id
    entry = repo.locate(digest(block("c"), repo.config.dedupe_key))  # block 2
    assert entry is not None
    flip_byte(pack_file(repo, entry.pack_id), entry.offset + CHUNK_HEADER.size + 1)
    dest = tmp_path / "restored.img"
    hole = r"1 block: block 2 \(bytes \[524288, 786432\)\)"
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        if not allow_holes:
            with pytest.raises(BlockferryError, match=hole + " not sent: their chunks are damaged"):
                await restore(running, rp, dest)
            assert not dest.exists()
            assert leftovers(tmp_path, dest) == []
            # quarantined: never located again, and the dedupe index is told to forget it
            assert repo.locate(entry.digest) is None
            assert (await newest_records(running.mesh))[entry.digest.hex()] is None
            return
        run = await restore(running, rp, dest, allow_holes=True)
    assert dest.read_bytes() == image[: 2 * BLOCK] + bytes(BLOCK) + image[3 * BLOCK :]
    assert run.counters["blocks_hole"] == 1
    assert len(run.warnings) == 1
    assert re.match(hole + " left as zeros", run.warnings[0]), run.warnings
