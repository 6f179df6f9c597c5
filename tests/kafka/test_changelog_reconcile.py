"""The target side's start-up reconciles the index changelog with the packs on a real
broker: a crash between garbage collection deleting packs and publishing their
tombstones leaves entries for chunks that are gone, and the next start-up tombstones
exactly those."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core import blocks
from blockferry.ingest.config import IngestConfig
from blockferry.mesh import Mesh
from blockferry.repository import Repository
from blockferry.repository.pack import PackEntry
from tests.kafka.pipelines import REPO, running_pipeline

pytestmark = pytest.mark.kafka

BLOCK_SIZE = 256 * 1024


def write_pack(repo: Repository, seeds: list[int]) -> list[PackEntry]:
    """Seal a pack of one chunk per seed, as chunk intake or repacking does."""
    writer = repo.open_pack()
    for seed in seeds:
        plain = b"block %d " % seed * 1000
        writer.add(blocks.digest(plain, repo.config.dedupe_key), plain, False, len(plain))
    return writer.seal().entries


async def newest_records(mesh: Mesh) -> dict[str, PackEntry | None]:
    """The newest record of each digest (in hex) on the index changelog (None: a
    tombstone)."""
    consumer = mesh.consumer("changelog-check")
    await consumer.start()
    try:
        await consumer.assign_all_from_start(mesh.topics.index(REPO))
        newest: dict[str, PackEntry | None] = {}
        for record in await consumer.read_to_end():
            assert record.key is not None
            if record.name == "Tombstone":
                newest[record.key.hex()] = None
            else:
                f = record.fields
                newest[record.key.hex()] = PackEntry(
                    f["digest"], f["pack_id"], f["offset"], f["stored_size"], f["plain_size"],
                    f["compressed"],
                )  # fmt: skip
        return newest
    finally:
        await consumer.stop()


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
