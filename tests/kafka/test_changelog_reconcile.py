"""The target side's start-up reconciles the index changelog with the packs on a real
broker: a crash between garbage collection deleting packs and publishing their
tombstones leaves entries for chunks that are gone, and the next start-up tombstones
exactly those."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.ingest.config import IngestConfig
from blockferry.repository import Repository
from tests.kafka.pipelines import REPO, newest_records, running_pipeline, write_pack

pytestmark = pytest.mark.kafka

BLOCK_SIZE = 256 * 1024


async def test_startup_tombstones_the_chunks_of_packs_gc_removed_before_publishing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=2)
    doomed = write_pack(repo, [1, 2, 3])
    kept = write_pack(repo, [4, 5])
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        published = await newest_records(running.mesh)
    assert published == {e.digest.hex(): e for e in doomed + kept}, "start-up republished the packs"

    # Garbage collection copies chunk 3 into a new pack and deletes the doomed one, then
    # the target side crashes: neither the moved entry nor the tombstones are published.
    moved = write_pack(repo, [3])
    with repo.exclusive_lock("gc") as held:
        repo.remove_packs([doomed[0].pack_id], held)
    gone = {e.digest.hex() for e in doomed} - {e.digest.hex() for e in moved}

    caplog.clear()
    async with running_pipeline(kafka_bootstrap, topic_prefix, repo, IngestConfig()) as running:
        newest = await newest_records(running.mesh)
    assert {d for d, r in newest.items() if r is None} == gone
    assert {d: r for d, r in newest.items() if r is not None} == {
        e.digest.hex(): e for e in kept + moved
    }
    assert f"{REPO}: tombstoned 2 changelog entries" in caplog.text
