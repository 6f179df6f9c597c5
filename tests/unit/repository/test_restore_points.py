"""Staging fixed indexes and committing, listing and reading restore points."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.core.errors import (
    ConfigError,
    CorruptionError,
    RepositoryError,
    RestorePointNotFound,
)
from blockferry.repository import Repository, RestorePoint, layout
from blockferry.repository.ids import is_restore_point_id
from tests.unit.repository.repo_helpers import BLOCK_SIZE, backup, block, make_image, root

DIGEST = b"\x07" * 32


def _stage(repo: Repository, session: str, disk: str, blocks: int = 2) -> None:
    repo.stage_fixed_index(session, disk, blocks * BLOCK_SIZE, [DIGEST] * blocks)


@pytest.mark.local_only
def test_commit_lists_and_reads_back(repo: Repository) -> None:
    image = make_image("aB0a", tail=123)
    point = backup(repo, "web-01", {"sda": image, "sdb": make_image("c")})
    assert is_restore_point_id(point.id)
    assert repo.restore_points() == [point]
    assert repo.restore_points("web-01") == [point]
    assert repo.restore_point(point.id) == point
    assert point.disk_names == ["sda", "sdb"]
    assert point.disk("sda").size == len(image)
    fidx = repo.read_fixed_index(point, "sda")
    assert (fidx.disk_size, fidx.block_size, fidx.block_count) == (len(image), BLOCK_SIZE, 5)
    assert fidx.digests[2] == ZERO_DIGEST
    assert repo.read_block(fidx.digests[1]) == block("B")
    assert fidx.digests[0] == fidx.digests[3]
    stored = json.loads(repo.storage.get(f"restorepoints/web-01/{point.id}/restorepoint.json"))
    assert stored["session_id"] == point.session_id and stored["stats"] == {"disks": 2}
    assert point.to_dict() == {k: v for k, v in stored.items() if k != "checksum"}
    assert not (root(repo) / "staging" / point.session_id).exists()


def test_restore_points_are_oldest_first_with_parents(repo: Repository) -> None:
    first = backup(repo, "a", {"d": make_image("a")})
    second = backup(repo, "b", {"d": make_image("b")})
    third = backup(repo, "a", {"d": make_image("c"), "e": make_image("d")}, parent=first.id)
    assert repo.restore_points() == [first, second, third]
    assert repo.restore_points("a") == [first, third]
    assert third.parent == first.id
    assert repo.jobs() == ["a", "b"]
    assert repo.latest_restore_point("a", "d") == third
    assert repo.latest_restore_point("a", "e") == third
    assert repo.latest_restore_point("b", "e") is None
    assert repo.latest_restore_point("nothing", "d") is None


@pytest.mark.local_only
def test_commit_is_idempotent_per_session(repo: Repository) -> None:
    _stage(repo, "s1", "sda")
    first = repo.commit_restore_point(
        job="j", session_id="s1", disks=["sda"], parent=None, stats={}
    )
    _stage(repo, "s1", "sda")  # a crash after the commit, before staging was removed
    again = repo.commit_restore_point(
        job="j", session_id="s1", disks=["sda"], parent=None, stats={}
    )
    assert again == first
    assert not (root(repo) / "staging" / "s1").exists()
    assert len(repo.restore_points()) == 1


@pytest.mark.local_only
def test_commit_is_atomic_when_it_fails_midway(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stage(repo, "s1", "sda")
    _stage(repo, "s1", "sdb")

    put_new = repo.storage.put_new

    def fail(name: str, data: bytes) -> None:
        if name.endswith("restorepoint.json"):  # the commit marker
            raise RepositoryError(f"writing {name}: Input/output error")
        put_new(name, data)

    monkeypatch.setattr(repo.storage, "put_new", fail)
    with pytest.raises(RepositoryError, match="Input/output error"):
        repo.commit_restore_point(
            job="j", session_id="s1", disks=["sda", "sdb"], parent=None, stats={}
        )
    monkeypatch.undo()
    assert repo.restore_points() == [] and repo.restore_point_ids() == []
    [unmarked] = repo.restore_point_store.unmarked()
    assert sorted(p.name for p in (root(repo) / unmarked).iterdir()) == ["sda.fidx", "sdb.fidx"]
    assert (root(repo) / "staging" / "s1" / "sdb.fidx").exists()
    assert repo.remove_interrupted_commits() == 1
    assert repo.restore_point_store.unmarked() == []
    point = repo.commit_restore_point(
        job="j", session_id="s1", disks=["sda", "sdb"], parent=None, stats={}
    )
    assert repo.restore_points() == [point]


@pytest.mark.local_only
def test_commit_takes_the_id_the_session_chose(repo: Repository) -> None:
    chosen = "20261127T010203Z-0badcafe"
    crashed = root(repo) / "restorepoints" / "j" / f".tmp-{chosen}"
    crashed.mkdir(parents=True)  # an earlier attempt killed half-way through
    (crashed / "restorepoint.json").write_text("{")
    _stage(repo, "s1", "sda")
    point = repo.commit_restore_point(
        job="j", session_id="s1", disks=["sda"], parent=None, stats={}, restore_point_id=chosen
    )
    assert point.id == chosen
    assert repo.restore_point(chosen) == point
    # another attempt's directory is not this one's to remove: housekeeping's, once old
    assert crashed.exists()
    assert repo.remove_leftovers() == 1
    assert not crashed.exists()
    _stage(repo, "s2", "sda")
    with pytest.raises(ConfigError, match="not a restore point id"):
        repo.commit_restore_point(
            job="j", session_id="s2", disks=["sda"], parent=None, stats={}, restore_point_id="x/y"
        )


def test_a_copy_keeps_its_sources_id_and_time_and_is_never_committed_twice(
    repo: Repository,
) -> None:
    source_id = "20261101T020304Z-c0ffee00"
    made = datetime(2026, 11, 1, 2, 3, 4, 567000, tzinfo=UTC)
    _stage(repo, "copy-1", "sda")
    point = repo.commit_restore_point(
        job="j",
        session_id="copy-1",
        disks=["sda"],
        parent=None,
        stats={},
        restore_point_id=source_id,
        created=made,
    )
    assert (point.id, point.created) == (source_id, made)
    assert repo.restore_point(source_id).created == made
    before = repo.read_fixed_index(point, "sda").digests.data
    _stage(repo, "copy-2", "sda", blocks=3)
    with pytest.raises(ConfigError, match="already"):
        repo.commit_restore_point(
            job="j",
            session_id="copy-2",
            disks=["sda"],
            parent=None,
            stats={},
            restore_point_id=source_id,
        )
    after = repo.read_fixed_index(repo.restore_point(source_id), "sda").digests.data
    assert after == before, "the committed one is left as it was"


@pytest.mark.local_only
def test_half_built_commit_directory_of_format_v1_is_invisible(repo: Repository) -> None:
    crashed = root(repo) / "restorepoints" / "j" / ".tmp-20261126T231500Z-1a2b3c4d"
    crashed.mkdir(parents=True)
    (crashed / "restorepoint.json").write_text("{")
    assert repo.restore_points() == []
    with pytest.raises(RestorePointNotFound):
        repo.restore_point("20261126T231500Z-1a2b3c4d")
    assert [info.name for info in repo.storage.leftovers()] == [
        "restorepoints/j/.tmp-20261126T231500Z-1a2b3c4d"
    ]
    assert repo.remove_leftovers(min_age=3600) == 0, "too young"
    old = 0
    os.utime(crashed, (old, old))
    assert repo.remove_leftovers(min_age=3600) == 1
    assert not crashed.exists()


@pytest.mark.parametrize(
    ("job", "session", "disks", "message"),
    [
        ("../x", "s", ["sda"], "invalid job"),
        ("j", "s/1", ["sda"], "invalid session"),
        ("j", "s", [".hidden"], "invalid disk"),
        ("j", "s", ["a" * 129], "invalid disk"),
        ("j", "s", [], "invalid"),
        ("j", "s", ["sda", "sda"], "invalid"),
    ],
)
def test_commit_validates_names(
    repo: Repository, job: str, session: str, disks: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        repo.commit_restore_point(job=job, session_id=session, disks=disks, parent=None, stats={})


def test_commit_needs_staged_disks_and_a_committed_parent(repo: Repository) -> None:
    _stage(repo, "s1", "sda")
    with pytest.raises(RepositoryError, match="no fixed index staged for disk sdb"):
        repo.commit_restore_point(
            job="j", session_id="s1", disks=["sda", "sdb"], parent=None, stats={}
        )
    with pytest.raises(RestorePointNotFound):
        repo.commit_restore_point(
            job="j", session_id="s1", disks=["sda"], parent="20261126T231500Z-1a2b3c4d", stats={}
        )
    with pytest.raises(RepositoryError, match="not JSON"):
        repo.commit_restore_point(
            job="j", session_id="s1", disks=["sda"], parent=None, stats={"x": object()}
        )
    assert repo.restore_points() == []


@pytest.mark.parametrize(
    ("disk_size", "digests"),
    [(BLOCK_SIZE, [DIGEST, DIGEST]), (2 * BLOCK_SIZE, [DIGEST]), (BLOCK_SIZE, [b"short"])],
)
def test_stage_rejects_digests_that_do_not_fit(
    repo: Repository, disk_size: int, digests: list[bytes]
) -> None:
    with pytest.raises(ConfigError):
        repo.stage_fixed_index("s", "sda", disk_size, digests)


def test_unknown_restore_point(repo: Repository) -> None:
    for rp_id in ("20261126T231500Z-1a2b3c4d", "../../etc", ""):
        with pytest.raises(RestorePointNotFound):
            repo.restore_point(rp_id)
    point = backup(repo, "j", {"sda": make_image("a")})
    with pytest.raises(ConfigError, match="no disk 'sdz'"):
        repo.read_fixed_index(point, "sdz")


def _point_dir(repo: Repository, point: RestorePoint) -> Path:
    return root(repo) / "restorepoints" / point.job / point.id


def test_damaged_restorepoint_json_is_detected_and_skipped_in_listings(repo: Repository) -> None:
    point = backup(repo, "j", {"sda": make_image("a")})
    name = layout.restore_point_file(point.job, point.id)
    text = repo.storage.get(name).decode()
    repo.storage.put(name, text.replace('"disks": 1', '"disks": 2').encode())
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        repo.restore_point(point.id)
    assert repo.restore_points() == []


@pytest.mark.local_only
def test_truncated_or_replaced_fixed_index_is_detected(repo: Repository) -> None:
    point = backup(repo, "j", {"sda": make_image("ab"), "sdb": make_image("ab")})
    sda = _point_dir(repo, point) / "sda.fidx"
    os.truncate(sda, sda.stat().st_size - 1)
    with pytest.raises(CorruptionError, match=r"truncated|fails authentication"):
        repo.read_fixed_index(point, "sda")
    other = backup(repo, "j", {"sdb": make_image("ba")})
    # the file copied over: sealed, it is bound to the other name
    (_point_dir(repo, point) / "sdb.fidx").write_bytes(
        (_point_dir(repo, other) / "sdb.fidx").read_bytes()
    )
    with pytest.raises(
        CorruptionError, match=r"does not match restorepoint\.json|fails authentication"
    ):
        repo.read_fixed_index(point, "sdb")
    # the object copied over, sealed under this name: the restore point's checksum tells
    repo.storage.put(
        repo.fixed_index_name(point, "sdb"), repo.storage.get(repo.fixed_index_name(other, "sdb"))
    )
    with pytest.raises(CorruptionError, match=r"does not match restorepoint\.json"):
        repo.read_fixed_index(point, "sdb")
