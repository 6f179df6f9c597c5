"""The pack index's snapshot: a start reads it instead of every index file, and it is
never trusted when it could name a chunk copy that is gone or damaged."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from blockferry.core.blocks import digest
from blockferry.repository import PackEntry, Repository, index_snapshot, layout, pack_index
from blockferry.repository.local_storage import LocalStorage
from tests.system import small_tmpfs
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    file_of,
    flip_byte,
    pack_file,
    reopen,
    root,
    temporary_names,
)


def _pack(repo: Repository, chunks: int = 20) -> list[PackEntry]:
    writer = repo.open_pack()
    for _ in range(chunks):
        data = os.urandom(64)
        writer.add(digest(data, repo.config.dedupe_key), data, False, len(data))
    return writer.seal().entries


@pytest.fixture
def decoded(decoded_index_files: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Packs whose index files were decoded (a snapshot spares them); snapshots are
    written after any load that decoded one entry."""
    monkeypatch.setattr(pack_index, "SNAPSHOT_AFTER_ENTRIES", 1)
    return decoded_index_files


def _located(repo: Repository, entries: list[PackEntry]) -> list[bool]:
    return [repo.locate(e.digest) == e for e in entries]


@pytest.mark.local_only
def test_a_start_reads_the_snapshot_and_only_newer_index_files(
    repo: Repository, decoded: list[str]
) -> None:
    entries = [e for _ in range(30) for e in _pack(repo)]
    first = reopen(repo)
    assert all(_located(first, entries))
    assert len(decoded) == 30
    assert file_of(repo, layout.INDEX_SNAPSHOT).exists()
    newer = _pack(repo)
    decoded.clear()
    second = reopen(repo)
    assert all(_located(second, entries + newer))
    assert decoded == [newer[0].pack_id]
    # written again after that load (it decoded an entry): the map itself
    snapshot = index_snapshot.read(repo.storage)
    assert snapshot is not None
    by_digest = {e.digest: e for e in snapshot.entries.values()}
    assert by_digest == {e.digest: e for e in entries + newer}
    assert snapshot.packs == {e.pack_id for e in entries + newer}


def test_the_start_up_of_the_target_side_reads_the_snapshot_too(
    repo: Repository, decoded: list[str]
) -> None:
    """Start-up indexes the packs a crash left without an index file, then locates: the
    snapshot spares the index files it covers, whether or not a pack was indexed."""
    entries = [e for _ in range(10) for e in _pack(repo)]
    reopen(repo).refresh_index()  # writes the snapshot
    for crashed in (False, True):
        newer = _pack(repo) if crashed else []
        decoded.clear()
        starting = reopen(repo)
        if newer:
            starting.storage.delete(layout.index_file(newer[0].pack_id))  # crash before it
        assert starting.rebuild_index(missing_only=True) == len(newer[:1])
        assert all(_located(starting, entries + newer))
        assert decoded == [e.pack_id for e in newer[:1]], "only what the snapshot lacks"


@pytest.mark.local_only
def test_a_snapshot_naming_a_removed_pack_is_ignored(repo: Repository, decoded: list[str]) -> None:
    """A GC removed a pack after the snapshot: its chunks must not be located."""
    kept, removed = _pack(repo), _pack(repo)
    reopen(repo).refresh_index()
    assert file_of(repo, layout.INDEX_SNAPSHOT).exists()
    (root(repo) / "index" / f"{removed[0].pack_id}.idx").unlink()
    decoded.clear()
    fresh = reopen(repo)
    assert all(_located(fresh, kept))
    assert not any(fresh.locate(e.digest) for e in removed)
    assert decoded == [kept[0].pack_id]  # loaded from the files, then written again
    snapshot = index_snapshot.read(repo.storage)
    assert snapshot is not None and snapshot.packs == {kept[0].pack_id}


def test_a_snapshot_from_before_a_quarantine_is_ignored(
    repo: Repository, decoded: list[str]
) -> None:
    entries = _pack(repo)
    reopen(repo).refresh_index()
    repo.quarantine(entries[3], "test")
    fresh = reopen(repo)
    assert fresh.locate(entries[3].digest) is None
    assert all(_located(fresh, entries[:3] + entries[4:]))
    snapshot = index_snapshot.read(repo.storage)
    assert snapshot is not None
    assert snapshot.quarantined == {(entries[3].pack_id, entries[3].digest)}
    # and the snapshot written with it is used, the copy still left out
    decoded.clear()
    again = reopen(repo)
    assert again.locate(entries[3].digest) is None
    assert all(_located(again, entries[:3] + entries[4:]))
    assert decoded == []


@pytest.mark.local_only
def test_a_snapshot_from_before_a_copy_left_quarantine_is_ignored(
    repo: Repository, decoded: list[str]
) -> None:
    """The operator took a copy out of quarantine (found it sound): located again."""
    entries = _pack(repo)
    repo.quarantine(entries[3], "test")
    reopen(repo).refresh_index()
    (name,) = os.listdir(file_of(repo, "quarantine"))
    (file_of(repo, "quarantine") / name).unlink()
    assert all(_located(reopen(repo), entries))


@pytest.mark.parametrize("where", [0, 9, 20, 60, 100, -1])
@pytest.mark.local_only
def test_a_damaged_snapshot_is_ignored(
    repo: Repository, decoded: list[str], where: int, caplog: pytest.LogCaptureFixture
) -> None:
    entries = [e for _ in range(3) for e in _pack(repo)]
    reopen(repo).refresh_index()
    flip_byte(file_of(repo, layout.INDEX_SNAPSHOT), where)
    decoded.clear()
    fresh = reopen(repo)
    assert all(_located(fresh, entries))
    assert len(decoded) == 3
    assert "ignoring the pack index snapshot" in caplog.text


@pytest.mark.local_only
def test_a_truncated_snapshot_is_ignored(repo: Repository, decoded: list[str]) -> None:
    entries = _pack(repo)
    reopen(repo).refresh_index()
    path = file_of(repo, layout.INDEX_SNAPSHOT)
    for size in (0, 10, path.stat().st_size - 1):
        os.truncate(path, size)
        with pytest.raises(index_snapshot.SnapshotUnusable):
            index_snapshot.read(LocalStorage(root(repo)))
        fresh = reopen(repo)
        assert all(_located(fresh, entries))


@pytest.mark.local_only
def test_rebuild_index_removes_the_snapshot(
    repo: Repository, decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index files written again from the packs may hold less than before (a damaged
    footer, chunks scanned as far as they check out): a snapshot of the old ones goes."""
    entries = _pack(repo)
    reopen(repo).refresh_index()
    assert file_of(repo, layout.INDEX_SNAPSHOT).exists()
    monkeypatch.setattr(pack_index, "SNAPSHOT_AFTER_ENTRIES", 100_000)
    assert repo.rebuild_index() == 1
    assert not file_of(repo, layout.INDEX_SNAPSHOT).exists()
    assert all(_located(reopen(repo), entries))


@pytest.mark.local_only
def test_a_snapshot_that_cannot_be_written_costs_nothing_but_a_warning(
    repo: Repository, decoded: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    entries = _pack(repo)
    file_of(repo, layout.INDEX_SNAPSHOT).mkdir()  # the rename onto it fails
    fresh = reopen(repo)
    assert all(_located(fresh, entries))
    assert "could not write the pack index snapshot" in caplog.text
    assert not [n for n in os.listdir(root(repo) / "index") if n.startswith(".")]
    shutil.rmtree(file_of(repo, layout.INDEX_SNAPSHOT))


@pytest.mark.local_only
def test_a_small_load_writes_no_snapshot(repo: Repository) -> None:
    entries = _pack(repo)
    assert all(_located(reopen(repo), entries))
    assert not file_of(repo, layout.INDEX_SNAPSHOT).exists()


def test_a_load_of_many_index_files_writes_a_snapshot_however_few_their_entries(
    repo: Repository, decoded_index_files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On object storage each index file is a request: many small ones are what a
    snapshot spares."""
    monkeypatch.setattr(pack_index, "SNAPSHOT_AFTER_FILES", 5)
    entries = [e for _ in range(5) for e in _pack(repo, chunks=1)]
    assert all(_located(reopen(repo), entries))
    assert index_snapshot.read(repo.storage) is not None
    decoded_index_files.clear()
    assert all(_located(reopen(repo), entries))
    assert decoded_index_files == [], "the next start reads the snapshot alone"


def test_a_full_file_system_costs_the_snapshot_only(
    tmp_path: Path, decoded: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "small", "2m") as small:
        repo = Repository.init(small / "repo", block_size=BLOCK_SIZE, shard_count=1)
        entries = _pack(repo)
        with (small / "filler").open("wb", buffering=0) as filler:
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\xff" * 4096)
        fresh = reopen(repo)
        assert all(_located(fresh, entries))
        assert "no space left" in caplog.text
        assert not file_of(repo, layout.INDEX_SNAPSHOT).exists()
        assert temporary_names(root(repo)) == []
        fresh.close()
        repo.close()


@pytest.mark.local_only
def test_a_writer_killed_mid_snapshot_leaves_a_temporary_that_is_reaped(
    repo: Repository, decoded: list[str]
) -> None:
    entries = _pack(repo)
    reopen(repo).refresh_index()
    snapshot = file_of(repo, layout.INDEX_SNAPSHOT)
    left = snapshot.with_name(f".{snapshot.name}.tmp-dead0000")  # as a SIGKILL leaves it
    left.write_bytes(snapshot.read_bytes()[:1000])
    decoded.clear()
    fresh = reopen(repo)
    assert all(_located(fresh, entries))
    assert decoded == []  # the published snapshot, not the torn one
    assert repo.remove_leftovers() == 1
    assert not left.exists() and snapshot.exists()


@pytest.mark.local_only
def test_a_pack_that_could_not_be_read_is_not_covered(repo: Repository, decoded: list[str]) -> None:
    """Its index file and footer unreadable at the load that wrote the snapshot (an I/O
    error, say): readable again later, its chunks must be located, not missing for
    every start to come."""
    readable, unreadable = _pack(repo), _pack(repo)
    pack_id = unreadable[0].pack_id
    index_file = root(repo) / "index" / f"{pack_id}.idx"
    good = index_file.read_bytes()
    flip_byte(index_file, -1)
    flip_byte(pack_file(repo, pack_id), -1)
    first = reopen(repo)
    assert all(_located(first, readable))
    assert not any(first.locate(e.digest) for e in unreadable)
    snapshot = index_snapshot.read(repo.storage)
    assert snapshot is not None and snapshot.packs == {readable[0].pack_id}
    index_file.write_bytes(good)
    assert all(_located(reopen(repo), readable + unreadable))
