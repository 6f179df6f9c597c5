"""verify: every referenced chunk is read; damage is named with what it affects."""

from __future__ import annotations

import json
import os

import pytest

from blockferry.core.blocks import digest
from blockferry.core.errors import RestorePointNotFound
from blockferry.repository import DamageKind, Repository, RestorePoint, verify
from blockferry.repository.pack import CHUNK_HEADER
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


def _three_points(repo: Repository) -> tuple[RestorePoint, RestorePoint, RestorePoint]:
    first = backup(repo, "web", {"sda": make_image("aB0", tail=77)})
    second = backup(repo, "web", {"sda": make_image("aC0")}, parent=first.id)
    other = backup(repo, "db", {"vda": make_image("xY")})
    return first, second, other


def test_healthy_repository_verifies(repo: Repository) -> None:
    first, second, other = _three_points(repo)
    done: list[tuple[int, int]] = []
    report = verify(repo, progress=lambda n, total: done.append((n, total)))
    assert report.ok, [d.describe() for d in report.damage]
    assert sorted(report.restore_points) == sorted([first.id, second.id, other.id])
    assert report.chunks_checked == 6  # a, B, tail, C, x, Y
    assert done[-1] == (6, 6)
    assert report.bytes_read > 0
    assert verify(repo, second.id).chunks_checked == 2
    assert report.summary().endswith(": ok") and report.to_dict()["ok"] is True
    assert repo.locks.list_locks() == []


def test_unknown_restore_point(repo: Repository) -> None:
    with pytest.raises(RestorePointNotFound):
        verify(repo, "20261126T231500Z-1a2b3c4d")


@pytest.mark.local_only
def test_flipped_chunk_byte_names_pack_digest_and_affected_points(repo: Repository) -> None:
    first, second, other = _three_points(repo)
    shared = digest(block("a"), repo.config.dedupe_key)
    entry = repo.locate(shared)
    assert entry is not None
    pack = pack_file(repo, entry.pack_id)
    flip_byte(pack, entry.offset + CHUNK_HEADER.size + 1000)

    report = verify(repo)
    assert not report.ok
    (damage,) = report.damage
    assert damage.kind is DamageKind.CHUNK
    assert damage.digest == shared.hex()
    assert damage.pack_id == entry.pack_id
    assert damage.path == f"packs/{entry.pack_id[:2]}/{entry.pack_id}.pack"
    assert damage.restore_points == tuple(sorted([first.id, second.id]))
    assert report.damaged_restore_points == sorted([first.id, second.id])
    assert shared.hex() in damage.describe() and first.id in damage.describe()
    document = json.loads(json.dumps(report.to_dict()))
    assert document["ok"] is False
    assert document["damage"][0]["digest"] == shared.hex()
    assert document["damage"][0]["kind"] == "chunk"
    assert shared.hex() in report.summary() and "1 damaged" in report.summary()
    assert verify(repo, other.id).ok


@pytest.mark.local_only
def test_truncated_pack_damages_the_chunks_past_the_cut(repo: Repository) -> None:
    first, _, other = _three_points(repo)
    entry = repo.locate(digest(block("Y"), repo.config.dedupe_key))
    assert entry is not None
    os.truncate(pack_file(repo, entry.pack_id), entry.offset + 10)
    repo.close()
    report = verify(repo)
    assert [d.kind for d in report.damage] == [DamageKind.CHUNK]
    assert "truncated" in report.damage[0].detail
    assert report.damaged_restore_points == [other.id]
    assert verify(repo, first.id).ok


@pytest.mark.local_only
def test_missing_pack_and_missing_chunk(repo: Repository) -> None:
    _, _, other = _three_points(repo)
    entry = repo.locate(digest(block("x"), repo.config.dedupe_key))
    assert entry is not None
    pack_file(repo, entry.pack_id).unlink()
    repo.close()
    report = verify(repo)
    assert {d.kind for d in report.damage} == {DamageKind.PACK}
    assert report.damaged_restore_points == [other.id]

    (root(repo) / "index" / f"{entry.pack_id}.idx").unlink()
    fresh = reopen(repo)
    report = verify(fresh)
    assert {d.kind for d in report.damage} == {DamageKind.MISSING_CHUNK}
    assert {d.digest for d in report.damage} == {
        digest(block(ch), repo.config.dedupe_key).hex() for ch in "xY"
    }


@pytest.mark.local_only
def test_damaged_fixed_index_and_restore_point_file(repo: Repository) -> None:
    first, second, other = _three_points(repo)
    flip_byte(fixed_index_file(repo, first, "sda"), -3)
    json_path = root(repo) / "restorepoints" / "db" / other.id / "restorepoint.json"
    flip_byte(json_path, len(json_path.read_bytes()) // 2)
    report = verify(repo)
    kinds = {d.kind: d for d in report.damage}
    assert set(kinds) == {DamageKind.FIXED_INDEX, DamageKind.RESTORE_POINT}
    assert kinds[DamageKind.FIXED_INDEX].restore_points == (first.id,)
    assert kinds[DamageKind.FIXED_INDEX].path == f"restorepoints/web/{first.id}/sda.fidx"
    assert kinds[DamageKind.RESTORE_POINT].restore_points == (other.id,)
    assert report.damaged_restore_points == sorted([first.id, other.id])
    assert verify(repo, second.id).ok
