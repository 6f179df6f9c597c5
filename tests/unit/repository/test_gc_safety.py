"""No backup lost to garbage collection: commit and GC ordered by the repository lock,
idempotent commits, and metadata GC cannot read stopping it rather than being taken for
garbage. Real repository files, real threads, paused at the repository's own hooks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from blockferry.core.blocks import digest
from blockferry.core.errors import CorruptionError, RepositoryError
from blockferry.failpoints import Point
from blockferry.repository import Repository, RestorePoint, layout, restore_disk, verify
from blockferry.repository.check import check
from blockferry.repository.damaged import check_metadata, set_aside
from blockferry.repository.gc import GcResult, collect_garbage
from blockferry.repository.retention import Policy
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    backup,
    block,
    file_of,
    fixed_index_file,
    flip_byte,
    make_image,
    root,
)

WAIT_S = 20.0
UNREADABLE = "checksum|malformed|not UTF-8|fails authentication"
"""What a flipped bit makes of a file: plain, a checksum or parse error; sealed, an
authentication failure."""


def gc(repo: Repository, dry_run: bool = False) -> GcResult:
    return collect_garbage(repo, grace=0, pack_size=64 * BLOCK_SIZE, dry_run=dry_run)


def d(repo: Repository, ch: str) -> bytes:
    return digest(block(ch), repo.config.dedupe_key)


class Pause:
    """Stops the first thread (or the named one) that reaches a hook until released."""

    def __init__(self, repo: Repository, point: Point, thread: str | None = None) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self._thread = thread
        self._used = False
        repo.hooks.on(point, self._handler)

    def _handler(self) -> None:
        if self._used or (self._thread and threading.current_thread().name != self._thread):
            return
        self._used = True
        self.reached.set()
        assert self.release.wait(WAIT_S), "the test never released the pause"


class Worker(threading.Thread):
    """A thread that keeps what its function returned or raised."""

    def __init__(self, name: str, fn: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = fn
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> object:
        self.join(WAIT_S)
        assert not self.is_alive(), f"{self.name} did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def every_committed_chunk_readable(repo: Repository) -> None:
    repo.refresh_index()
    for point in repo.restore_points():
        for disk in point.disk_names:
            for chunk in repo.read_fixed_index(point, disk).chunk_digests():
                repo.read_block(chunk)


def restores(repo: Repository, point: RestorePoint, image: bytes, tmp_path: Path) -> bool:
    out = tmp_path / f"{point.id}.img"
    restore_disk(repo, point.id, "sda", out, force=False)
    return out.read_bytes() == image


# -- 1. commit against GC ----------------------------------------------------------------


def test_a_commit_while_gc_scans_keeps_its_chunks(repo: Repository, tmp_path: Path) -> None:
    """A session staged its fixed index, sharing p and q only with a restore point that
    prune removed; it commits while GC is between reading staging and restore points."""
    backup(repo, "j", {"sda": make_image("pq")})
    backup(repo, "j", {"sda": make_image("rs")})
    repo.stage_fixed_index("s2", "sda", 2 * BLOCK_SIZE, [d(repo, "p"), d(repo, "q")])
    repo.prune("j", Policy(keep_last=1))

    scan = Pause(repo, Point.GC_HALF_SCANNED)
    commit_waits = threading.Event()
    repo.hooks.on(Point.LOCK_BUSY, commit_waits.set)
    collector = Worker("gc", lambda: gc(repo))
    collector.start()
    assert scan.reached.wait(WAIT_S)
    committer = Worker(
        "commit",
        lambda: repo.commit_restore_point(
            job="j", session_id="s2", disks=["sda"], parent=None, stats={}, lock_wait=WAIT_S
        ),
    )
    committer.start()
    # The commit either waits for GC's lock or, without one, lands inside the scan.
    while not commit_waits.wait(0.05) and committer.is_alive():
        pass
    scan.release.set()
    collector.outcome()
    point = committer.outcome()
    assert isinstance(point, RestorePoint)

    every_committed_chunk_readable(repo)
    assert restores(repo, point, make_image("pq"), tmp_path)
    assert verify(repo).ok


# -- 3. idempotent commit ------------------------------------------------------------------


@pytest.mark.local_only
def test_two_commits_of_one_session_racing_leave_it_whole(repo: Repository, tmp_path: Path) -> None:
    """Attempt A has built its restore point and is about to rename it into place when
    attempt B (an orchestrator restarted mid-commit) starts building its own."""
    image = make_image("ab")
    first = backup(repo, "j", {"sda": image})
    repo.stage_fixed_index("s2", "sda", len(image), repo.read_fixed_index(first, "sda").digests)
    rp_id = "20261201T000000Z-0000abcd"

    def commit() -> RestorePoint:
        return repo.commit_restore_point(
            job="j", session_id="s2", disks=["sda"], parent=first.id, stats={},
            restore_point_id=rp_id,
        )  # fmt: skip

    a_ready = Pause(repo, Point.COMMIT_INDEXES_WRITTEN, thread="a")
    b_created = Pause(repo, Point.COMMIT_STARTED, thread="b")
    a, b = Worker("a", commit), Worker("b", commit)
    a.start()
    assert a_ready.reached.wait(WAIT_S)
    b.start()
    assert b_created.reached.wait(WAIT_S)
    a_ready.release.set()
    a_point = a.outcome()
    b_created.release.set()
    b_point = b.outcome()

    assert a_point == b_point
    assert [p.id for p in repo.restore_points()] == [first.id, rp_id]
    assert restores(repo, repo.restore_point(rp_id), image, tmp_path)
    assert verify(repo).ok
    assert list((root(repo) / "staging").iterdir()) == []
    assert not [p for p in (root(repo) / "restorepoints" / "j").iterdir() if p.name[0] == "."]


def test_a_commit_that_finds_its_session_committed_meanwhile_succeeds(repo: Repository) -> None:
    """B looked for an existing restore point of the session before A committed, and
    then finds the staging gone: it answers success with A's restore point."""
    image = make_image("ab")
    first = backup(repo, "j", {"sda": image})
    repo.stage_fixed_index("s2", "sda", len(image), repo.read_fixed_index(first, "sda").digests)
    rp_id = "20261201T000000Z-0000abcd"
    args = {"job": "j", "session_id": "s2", "disks": ["sda"], "parent": first.id, "stats": {}}

    b_created = Pause(repo, Point.COMMIT_STARTED, thread="b")
    b = Worker("b", lambda: repo.commit_restore_point(**args, restore_point_id=rp_id))
    b.start()
    assert b_created.reached.wait(WAIT_S)
    a_point = repo.commit_restore_point(**args, restore_point_id=rp_id)
    b_created.release.set()
    assert b.outcome() == a_point
    # once more, long after: a no-op answering success
    assert repo.commit_restore_point(**args, restore_point_id=rp_id) == a_point
    assert repo.commit_restore_point(**args) == a_point
    assert verify(repo).ok


@pytest.mark.local_only
def test_gc_removes_the_staging_a_disk_end_handled_again_left_after_the_commit(
    repo: Repository,
) -> None:
    """A disk's end read again after a crash may stage once more for a session already
    committed: that staging would keep its chunks alive for ever. GC removes it (the
    session's chunks stay: its restore point names them); running staging stays."""
    image = make_image("ab")
    point = backup(repo, "j", {"sda": image}, session="s1")
    digests = repo.read_fixed_index(point, "sda").digests
    repo.stage_fixed_index("s1", "sda", len(image), digests)
    repo.stage_fixed_index("running", "sda", len(image), digests)
    assert repo.committed_as("j", "s2") is None
    gc(repo)
    assert not (root(repo) / "staging" / "s1").exists()
    assert repo.is_staged("running", "sda")
    assert verify(repo).ok
    repo.stage_fixed_index("s1", "sda", len(image), digests)
    assert repo.committed_as("j", "s1") == point
    assert not (root(repo) / "staging" / "s1").exists(), "asking removes it too"


# -- 2. unreadable is never unused -----------------------------------------------------------


def _two_points(repo: Repository) -> tuple[RestorePoint, RestorePoint]:
    """An old restore point (chunks a, b) and a newer one (chunks c, d)."""
    old = backup(repo, "j", {"sda": make_image("ab")})
    new = backup(repo, "j", {"sda": make_image("cd")})
    return old, new


def _damage_rp_json(repo: Repository, point: RestorePoint) -> Path:
    """One byte of the document changed, a stats counter 1 becoming 3, and written back
    as the repository writes it (sealed, in an encrypted one): its checksum fails."""
    name = layout.restore_point_file(point.job, point.id)
    text = repo.storage.get(name).decode()
    assert text.count('"disks": 1') == 1
    repo.storage.put(name, text.replace('"disks": 1', '"disks": 3').encode())
    return file_of(repo, name)


def _flip_rp_json(repo: Repository, point: RestorePoint) -> Path:
    """One bit of the file flipped, as a disk does."""
    path = file_of(repo, layout.restore_point_file(point.job, point.id))
    flip_byte(path, len(path.read_bytes()) // 2)
    return path


def _newer_version(repo: Repository, point: RestorePoint) -> Path:
    name = layout.restore_point_file(point.job, point.id)
    document = json.loads(repo.storage.get(name))
    document["version"] = 2  # a newer blockferry's restore point (its checksum still fits)
    body = {k: v for k, v in document.items() if k != "checksum"}
    from blockferry.repository.restore_point import body_checksum

    document["checksum"] = f"{body_checksum(body):016x}"
    repo.storage.put(name, json.dumps(document).encode())
    return file_of(repo, name)


def _damage_fidx(repo: Repository, point: RestorePoint) -> Path:
    path = fixed_index_file(repo, point, "sda")
    flip_byte(path, -1)
    return path


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_damage_rp_json, "checksum mismatch"),
        (_flip_rp_json, UNREADABLE),
        (_newer_version, "newer"),
        (_damage_fidx, UNREADABLE),
    ],
)
@pytest.mark.local_only
def test_gc_stops_at_metadata_it_cannot_read_and_deletes_nothing(
    repo: Repository, damage: Callable[[Repository, RestorePoint], Path], says: str
) -> None:
    old, _ = _two_points(repo)
    path = damage(repo, old)
    packs = repo.sealed_pack_ids()

    with pytest.raises(CorruptionError, match=says) as stopped:
        gc(repo)
    message = str(stopped.value)
    assert path.relative_to(root(repo)).as_posix() in message
    assert "nothing was deleted" in message and "set-aside" in message
    assert repo.sealed_pack_ids() == packs
    assert repo.locate(d(repo, "a")) is not None


@pytest.mark.local_only
def test_gc_stops_at_a_damaged_staged_fixed_index(repo: Repository) -> None:
    _two_points(repo)
    repo.stage_fixed_index("s9", "sda", BLOCK_SIZE, [d(repo, "a")])
    path = file_of(repo, layout.staged_fixed_index("s9", "sda"))
    flip_byte(path, -1)
    repo.prune("j", Policy(keep_last=1))
    packs = repo.sealed_pack_ids()
    with pytest.raises(CorruptionError, match=r"staging/s9/sda\.fidx"):
        gc(repo)
    assert repo.sealed_pack_ids() == packs


@pytest.mark.local_only
def test_prune_stops_at_a_restore_point_it_cannot_read(repo: Repository) -> None:
    old, new = _two_points(repo)
    newest = backup(repo, "j", {"sda": make_image("ef")})
    path = _damage_rp_json(repo, new)
    with pytest.raises(CorruptionError, match="nothing was removed") as stopped:
        repo.prune("j", Policy(keep_last=1))
    assert path.relative_to(root(repo)).as_posix() in str(stopped.value)
    assert {p.id for p in repo.restore_points()} == {old.id, newest.id}


@pytest.mark.local_only
def test_a_damaged_restore_point_set_aside_keeps_its_chunks_and_lets_gc_run(
    repo: Repository, tmp_path: Path
) -> None:
    """The operator's way out: the damaged restore point is moved to damaged/, not
    listed or restorable, and GC runs again; the chunks its fixed index names stay, so
    the restore point can still be repaired and put back."""
    _two_points(repo)
    gone = backup(repo, "j", {"sda": make_image("gh")})
    repo.prune("j", Policy(keep_last=1))  # removes old and new (newest: gone)
    assert [p.id for p in repo.restore_points()] == [gone.id]
    kept = backup(repo, "k", {"sda": make_image("ab")})  # a and b live in job k
    original = file_of(repo, layout.restore_point_file("k", kept.id)).read_bytes()
    path = _flip_rp_json(repo, kept)
    with pytest.raises(CorruptionError):
        gc(repo)

    aside = set_aside(repo, kept.id)
    assert aside == f"damaged/restorepoints/k/{kept.id}/"
    assert [p.id for p in repo.restore_points()] == [gone.id]
    result = gc(repo)
    assert result.chunks_removed == 2  # c and d
    assert repo.locate(d(repo, "a")) is not None and repo.locate(d(repo, "b")) is not None
    assert repo.locate(d(repo, "c")) is None

    # repaired (the file copied back from where it was kept) and put back, it restores
    (root(repo) / aside / "restorepoint.json").write_bytes(original)
    (root(repo) / aside).rename(root(repo) / layout.restore_point_prefix("k", kept.id))
    assert restores(repo, kept, make_image("ab"), tmp_path)
    with pytest.raises(RepositoryError, match="no committed restore point or staged session"):
        set_aside(repo, "20260101T000000Z-00000000")
    assert path.exists()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_damage_rp_json, "checksum mismatch"),
        (_flip_rp_json, UNREADABLE),
        (_newer_version, "newer"),
        (
            lambda repo, point: _truncate(fixed_index_file(repo, point, "sda")),
            "truncated|fails authentication",
        ),
        (lambda repo, point: _staged_and_damaged(repo), "staging"),
    ],
)
@pytest.mark.local_only
def test_start_up_refuses_metadata_it_cannot_read_and_check_names_it(
    repo: Repository, damage: Callable[[Repository, RestorePoint], Path], says: str
) -> None:
    old, _ = _two_points(repo)
    check_metadata(repo)
    path = damage(repo, old)
    with pytest.raises(CorruptionError, match=says) as refused:
        check_metadata(repo)
    assert path.relative_to(root(repo)).as_posix() in str(refused.value)
    assert "set-aside" in str(refused.value)
    report = check(repo)
    assert [problem.path for problem in report.problems] == [
        path.relative_to(root(repo)).as_posix()
    ]


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:30])
    return path


def _staged_and_damaged(repo: Repository) -> Path:
    repo.stage_fixed_index("s9", "sda", BLOCK_SIZE, [d(repo, "a")])
    path = file_of(repo, layout.staged_fixed_index("s9", "sda"))
    flip_byte(path, -1)
    return path


@pytest.mark.local_only
def test_check_lists_what_was_set_aside(repo: Repository) -> None:
    old, _ = _two_points(repo)
    _damage_fidx(repo, old)
    assert not check(repo).ok
    aside = set_aside(repo, old.id)
    report = check(repo)
    assert report.ok
    assert report.warnings == [
        f"set aside (its chunks are kept; repair it and move it back, or delete it): {aside}"
    ]
    check_metadata(repo)
