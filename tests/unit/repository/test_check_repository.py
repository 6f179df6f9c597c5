"""check: structural consistency without reading chunk bodies."""

from __future__ import annotations

import json

import pytest

from blockferry.core.blocks import digest
from blockferry.repository import ProblemKind, Repository, check, layout
from blockferry.repository.pack import CHUNK_HEADER
from blockferry.repository.pack_index import encode_index_file
from tests.unit.repository.repo_helpers import (
    backup,
    block,
    fixed_index_file,
    flip_byte,
    make_image,
    pack_file,
    reopen,
    root,
)


@pytest.fixture
def populated(repo: Repository) -> Repository:
    backup(repo, "web", {"sda": make_image("aB0")})
    backup(repo, "db", {"vda": make_image("cd")})
    return repo


def _pack_of(repo: Repository, ch: str) -> str:
    entry = repo.locate(digest(block(ch), repo.config.dedupe_key))
    assert entry is not None
    return entry.pack_id


def test_healthy_repository(populated: Repository) -> None:
    report = check(populated)
    assert report.ok, [p.describe() for p in report.problems]
    assert (report.packs_checked, report.index_files_checked) == (2, 2)
    assert report.restore_points_checked == 2
    assert report.chunks_indexed == 4
    assert report.warnings == []
    assert report.to_dict()["chunks_indexed"] == 4 and report.summary().endswith(": ok")


@pytest.mark.local_only
def test_chunk_bodies_are_not_read(populated: Repository) -> None:
    entry = populated.locate(digest(block("a"), populated.config.dedupe_key))
    assert entry is not None
    flip_byte(pack_file(populated, entry.pack_id), entry.offset + CHUNK_HEADER.size + 1)
    assert check(populated).ok


@pytest.mark.local_only
def test_index_file_problems(populated: Repository) -> None:
    web, db = _pack_of(populated, "a"), _pack_of(populated, "c")
    (root(populated) / "index" / f"{web}.idx").unlink()
    orphan = "e" * 32
    populated.storage.put(layout.index_file(orphan), encode_index_file(orphan, []))
    damaged = root(populated) / "index" / f"{db}.idx"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    report = check(populated)
    details = sorted(p.detail for p in report.problems if p.kind is ProblemKind.INDEX)
    assert any("has no index file" in d and "rebuild-index" in d for d in details)
    assert any(f"pack {orphan} does not exist" in d for d in details), details
    assert any("entries" in d or "fails authentication" in d for d in details)  # truncated
    assert populated.rebuild_index() == 2
    assert check(populated).ok


@pytest.mark.local_only
def test_damaged_footer_and_missing_chunks(populated: Repository) -> None:
    pack_id = _pack_of(populated, "c")
    flip_byte(pack_file(populated, pack_id), -1)
    report = check(populated)
    assert [p.kind for p in report.problems] == [ProblemKind.PACK]
    assert "no footer magic" in report.problems[0].detail

    pack_file(populated, pack_id).unlink()
    (root(populated) / "index" / f"{pack_id}.idx").unlink()
    report = check(reopen(populated))
    assert [p.kind for p in report.problems] == [ProblemKind.MISSING_CHUNK]
    assert report.to_dict()["problems"][0]["kind"] == "missing-chunk"
    assert "1 problems" in report.summary()
    assert "2 chunks" in report.problems[0].detail
    assert report.problems[0].path.endswith("vda.fidx")


@pytest.mark.local_only
def test_config_and_restore_point_damage(populated: Repository) -> None:
    config = root(populated) / "config.json"
    document = json.loads(config.read_text())
    config.write_text(json.dumps(document | {"shard_count": 9}))
    point = populated.restore_points("web")[0]
    flip_byte(fixed_index_file(populated, point, "sda"), 0)
    kinds = sorted(p.kind for p in check(populated).problems)
    assert kinds == sorted([ProblemKind.CONFIG, ProblemKind.FIXED_INDEX])


@pytest.mark.local_only
def test_temporary_files_are_warnings(populated: Repository) -> None:
    (root(populated) / "index" / ".x.idx.tmp-1234").write_bytes(b"")
    report = check(populated)
    assert report.ok
    assert report.warnings == ["temporary file left behind: index/.x.idx.tmp-1234"]
