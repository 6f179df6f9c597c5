"""Golden files: the bytes of every structure are frozen.

A failure here means the on-disk format changed. That needs a new format
version and readers for the old one, not new golden files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core.blocks import ZERO_DIGEST, checksum, decompress, digest
from blockferry.repository.config import RepositoryConfig
from blockferry.repository.fixed_index import FixedIndex
from blockferry.repository.pack import read_chunk, read_footer
from blockferry.repository.pack_index import decode_index_file
from blockferry.repository.restore_point import RestorePoint
from tests.unit.repository import golden_files as golden


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("golden")
    golden.build(directory)
    return directory


@pytest.mark.parametrize("name", golden.FILES)
def test_code_writes_the_golden_bytes(written: Path, name: str) -> None:
    committed = (golden.GOLDEN_DIR / name).read_bytes()
    assert (written / name).read_bytes() == committed, f"format of {name} changed"


@pytest.mark.parametrize(("version", "generation"), [(1, 0), (2, golden.GENERATION)])
def test_golden_pack_reads_back(tmp_path: Path, version: int, generation: int) -> None:
    storage = golden.pack_storage(tmp_path, version)
    footer = read_footer(storage, golden.PACK_ID)
    assert footer.generation == generation
    entries = footer.entries
    assert [e.digest for e in entries] == [golden.plain_digest(), golden.compressed_digest()]
    assert [e.compressed for e in entries] == [False, True]
    plain = read_chunk(storage, entries[0])
    frame = read_chunk(storage, entries[1])
    assert plain == golden.PLAIN_BLOCK
    block = decompress(frame, entries[1].plain_size)
    assert block == golden.COMPRESSED_BLOCK
    assert digest(block, golden.KEY) == entries[1].digest


def test_golden_index_file_matches_pack_footer(tmp_path: Path) -> None:
    index = (golden.GOLDEN_DIR / "pack-v1.idx").read_bytes()
    entries = decode_index_file(index, golden.PACK_ID, "pack-v1.idx")
    assert entries == read_footer(golden.pack_storage(tmp_path), golden.PACK_ID).entries


def test_golden_fixed_index_reads_back() -> None:
    fidx = FixedIndex.decode((golden.GOLDEN_DIR / "fixed-index-v1.fidx").read_bytes(), "golden")
    assert (fidx.block_size, fidx.disk_size, fidx.block_count) == (
        golden.BLOCK_SIZE,
        golden.DISK_SIZE,
        3,
    )
    assert list(fidx.digests) == [golden.plain_digest(), ZERO_DIGEST, golden.compressed_digest()]


@pytest.mark.parametrize("version", [1, 2])
def test_golden_config_reads_back(version: int) -> None:
    data = (golden.GOLDEN_DIR / f"config-v{version}.json").read_bytes()
    config = RepositoryConfig.from_json(data, "g")
    assert (config.version, config.encrypted) == (version, False)
    assert config.block_size == 1024 * 1024
    assert config.shard_count == 8
    assert config.dedupe_key == golden.KEY
    assert config.created == golden.CREATED


def test_golden_restore_point_reads_back() -> None:
    data = (golden.GOLDEN_DIR / "restorepoint-v1.json").read_bytes()
    point = RestorePoint.from_json(data, "golden")
    fidx = (golden.GOLDEN_DIR / "fixed-index-v1.fidx").read_bytes()
    assert point.id == "20261126T231500Z-1a2b3c4d"
    assert point.parent == "20261125T231500Z-0f0e0d0c"
    assert point.disk("sda").fidx_checksum == checksum(fidx)
    assert point.stats["guest"] == {"frozen": True}
