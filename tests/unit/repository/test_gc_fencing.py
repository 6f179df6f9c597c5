"""Fencing: a garbage collection whose exclusive lock was taken over (it went stale while
the process was stopped) stops before its next delete. Real processes, real SIGSTOP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from blockferry.core.errors import LockLost
from blockferry.failpoints import Point
from blockferry.repository import LockKind, Repository, RepositoryLocks, verify
from blockferry.repository.gc import collect_garbage
from blockferry.repository.retention import Policy
from tests.unit.repository.repo_helpers import BLOCK_SIZE, backup, child_args, make_image, root

REPO_ROOT = Path(__file__).resolve().parents[3]


def _garbage(repo: Repository) -> list[str]:
    """A repository where GC has a pack to delete; returns the packs there are."""
    backup(repo, "j", {"sda": make_image("ab")})
    backup(repo, "j", {"sda": make_image("cd")})
    repo.prune("j", Policy(keep_last=1))
    return repo.sealed_pack_ids()


@pytest.mark.local_only
def test_gc_stops_before_deleting_when_its_lock_was_taken_over(repo: Repository) -> None:
    packs = _garbage(repo)
    repo.locks = RepositoryLocks(repo.storage, stale_after=2, refresh_every=0, hooks=repo.hooks)
    scanned, go_on = threading.Event(), threading.Event()

    def pause() -> None:
        scanned.set()
        go_on.wait(20)

    repo.hooks.on(Point.GC_SCANNED, pause)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            collect_garbage(repo, grace=0, pack_size=64 * BLOCK_SIZE)
        except BaseException as exc:
            outcome.append(exc)

    collector = threading.Thread(target=run)
    collector.start()
    assert scanned.wait(20)
    # No heartbeat for longer than the stale time: another process takes the lock over.
    (held,) = (root(repo) / "locks").glob("exclusive-*.json")
    os.utime(held, (time.time() - 3, time.time() - 3))
    other = RepositoryLocks(repo.storage, stale_after=2, refresh_every=0)
    with other.exclusive("gc elsewhere"):
        go_on.set()
        collector.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], LockLost), outcome
    assert "removed as stale" in str(outcome[0])
    assert repo.sealed_pack_ids() == packs, "nothing was deleted after the takeover"
    assert verify(repo).ok


CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, timedelta
    from blockferry.core.errors import LockLost
    from blockferry.repository import RepositoryLocks
    from blockferry.repository.gc import collect_garbage
    from blockferry.failpoints import Point

    from tests.unit.repository.repo_helpers import open_from_args

    repo = open_from_args(sys.argv[1:])
    repo.locks = RepositoryLocks(repo.storage, stale_after=2, refresh_every=0.2, hooks=repo.hooks
    )
    def scanned():
        print("scanned", flush=True)
        time.sleep(1)  # the parent stops this process here
    repo.hooks.on(Point.GC_SCANNED, scanned)
    try:
        collect_garbage(repo, grace=0, pack_size=1 << 24)
    except LockLost as exc:
        print("lost:", exc, flush=True)
        sys.exit(3)
    print("collected", flush=True)
    """
)


@pytest.mark.local_only
def test_a_stopped_gc_whose_lock_went_stale_stops_before_deleting(repo: Repository) -> None:
    packs = _garbage(repo)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *child_args(repo)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'services'}{os.pathsep}{REPO_ROOT}"},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "scanned"
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(2.5)  # longer than the stale time: no heartbeat meanwhile
        other = RepositoryLocks(repo.storage, stale_after=2, refresh_every=0)
        with other.exclusive("gc elsewhere"):
            os.kill(child.pid, signal.SIGCONT)
            rest = child.stdout.read()
            assert child.wait(20) == 3, rest
        assert rest.startswith("lost:")
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
    assert repo.sealed_pack_ids() == packs, "nothing was deleted after the takeover"
    assert verify(repo).ok


@pytest.mark.parametrize("kind", [LockKind.SHARED, LockKind.EXCLUSIVE])
def test_rebuild_index_waits_for_no_one_and_is_refused_under_gc(
    repo: Repository, kind: LockKind
) -> None:
    """A full rebuild removes index files of packs it does not see: never beside a GC or
    a backup. The start-up variant (missing index files only) runs beside backups."""
    _garbage(repo)
    other = RepositoryLocks(repo.storage, refresh_every=0)
    with other.acquire(kind, purpose="someone"):
        with pytest.raises(Exception, match="someone"):
            repo.rebuild_index()
        if kind is LockKind.SHARED:
            assert repo.rebuild_index(missing_only=True) == 0
        else:
            with pytest.raises(Exception, match="someone"):
                repo.rebuild_index(missing_only=True)
    assert repo.rebuild_index() == len(repo.sealed_pack_ids())
