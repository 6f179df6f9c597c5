"""Repository locks: shared and exclusive, stale recovery, refresh."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from blockferry.core.errors import LockError
from blockferry.repository import LockInfo, LockKind, Repository, RepositoryLocks
from blockferry.repository.ids import utc_now
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.locks import Process
from tests.unit.repository.repo_helpers import SkewedClock, root


def _locks(repo: Repository, **kwargs: float | str) -> RepositoryLocks:
    return RepositoryLocks(repo.storage, **kwargs)  # type: ignore[arg-type]


def _plant(
    repo: Repository,
    kind: LockKind,
    *,
    host: str,
    pid: int,
    age: float = 0.0,
    process: Process | None = None,
) -> Path:
    taken = utc_now() - timedelta(seconds=age)
    info = LockInfo(
        f"{kind}-planted.json", kind, "planted", host, pid, taken, "planted", taken, process
    )
    path = root(repo) / "locks" / info.name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(info.to_json())
    os.utime(path, (taken.timestamp(), taken.timestamp()))
    return path


@pytest.mark.parametrize(
    ("held", "wanted", "conflict"),
    [
        (LockKind.SHARED, LockKind.SHARED, False),
        (LockKind.SHARED, LockKind.EXCLUSIVE, True),
        (LockKind.EXCLUSIVE, LockKind.SHARED, True),
        (LockKind.EXCLUSIVE, LockKind.EXCLUSIVE, True),
    ],
)
def test_conflicts(repo: Repository, held: LockKind, wanted: LockKind, conflict: bool) -> None:
    locks = _locks(repo, refresh_every=0)
    with locks.acquire(held, purpose="backup"):
        if conflict:
            with pytest.raises(LockError, match=r"held by .*pid .*\(backup\)"):
                locks.acquire(wanted)
        else:
            locks.acquire(wanted).release()
    assert repo.locks.list_locks() == []


@pytest.mark.local_only
def test_repository_context_managers(repo: Repository) -> None:
    with repo.shared_lock("restore") as held:
        assert held.kind is LockKind.SHARED
        with repo.shared_lock("verify"):
            assert len(repo.locks.list_locks()) == 2
        with pytest.raises(LockError):
            repo.exclusive_lock("gc").__enter__()
    with repo.exclusive_lock("gc") as held:
        assert (root(repo) / held.path).exists()
    assert repo.locks.list_locks() == []


def _process(pid: int) -> Process:
    """``pid`` as a lock file names it, seen from this process's kernel and namespace."""
    here = Process.current()
    assert here is not None
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return Process(here.boot_id, here.pid_namespace, pid, started)


def _dead_process() -> Process:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        return _process(process.pid)
    finally:
        process.kill()
        process.wait()


@pytest.mark.local_only
def test_lock_of_a_dead_process_on_this_kernel_is_recovered(repo: Repository) -> None:
    locks = _locks(repo, refresh_every=0)
    dead = _dead_process()
    planted = _plant(repo, LockKind.EXCLUSIVE, host=locks.host, pid=dead.pid, process=dead)
    with locks.exclusive("gc"):
        assert not planted.exists()


@pytest.mark.local_only
def test_live_process_lock_is_respected(repo: Repository) -> None:
    locks = _locks(repo, refresh_every=0)
    live = _process(os.getppid())
    _plant(repo, LockKind.EXCLUSIVE, host=locks.host, pid=live.pid, process=live)
    with pytest.raises(LockError):
        locks.acquire(LockKind.SHARED)
    # the same pid, reused by a process that started later, is not the owner
    reused = Process(live.boot_id, live.pid_namespace, live.pid, live.start + 1)
    planted = _plant(repo, LockKind.EXCLUSIVE, host=locks.host, pid=live.pid, process=reused)
    locks.acquire(LockKind.SHARED).release()
    assert not planted.exists()


@pytest.mark.parametrize("elsewhere", ["other pid namespace", "other kernel", "no process"])
@pytest.mark.local_only
def test_a_container_sharing_the_host_name_keeps_its_lock(repo: Repository, elsewhere: str) -> None:
    """Containers share host names and pids: a lock whose owner runs in another pid
    namespace (or kernel) is never taken for dead because its pid is unknown here."""
    locks = _locks(repo, refresh_every=0, stale_after=60)
    dead = _dead_process()
    process = {
        "other pid namespace": Process(dead.boot_id, dead.pid_namespace + 1, dead.pid, dead.start),
        "other kernel": Process("another-boot", dead.pid_namespace, dead.pid, dead.start),
        "no process": None,
    }[elsewhere]
    planted = _plant(repo, LockKind.EXCLUSIVE, host=locks.host, pid=dead.pid, process=process)
    with pytest.raises(LockError, match="planted"):
        locks.acquire(LockKind.SHARED)
    os.utime(planted, (time.time() - 61, time.time() - 61))  # no heartbeat for too long
    locks.acquire(LockKind.SHARED).release()
    assert not planted.exists()


@pytest.mark.parametrize("skew", [timedelta(0), timedelta(days=-1), timedelta(days=1)])
@pytest.mark.local_only
def test_lock_of_another_host_is_stale_only_after_the_timeout(
    repo: Repository, skew: timedelta
) -> None:
    """Timed by the storage's clock alone: a server whose clock is a day off changes
    nothing (a day behind, a fresh lock would look stale to a host's clock; a day ahead,
    a stale one fresh)."""
    skewed = SkewedClock(LocalStorage(root(repo)), skew)
    locks = RepositoryLocks(skewed, refresh_every=0, stale_after=60)
    planted = _plant(repo, LockKind.EXCLUSIVE, host="elsewhere", pid=1, age=30)
    with pytest.raises(LockError, match="elsewhere"):
        locks.acquire(LockKind.SHARED)
    planted.unlink()
    planted = _plant(repo, LockKind.EXCLUSIVE, host="elsewhere", pid=1, age=61)
    with locks.shared():
        assert not planted.exists()


@pytest.mark.local_only
def test_unreadable_lock_file_counts_as_held_until_old(repo: Repository) -> None:
    locks = _locks(repo, refresh_every=0, stale_after=60)
    junk = root(repo) / "locks" / "exclusive-junk.json"
    junk.parent.mkdir(exist_ok=True)
    junk.write_text("{not json")
    with pytest.raises(LockError, match="unreadable"):
        locks.acquire(LockKind.SHARED)
    old = time.time() - 120
    os.utime(junk, (old, old))
    locks.acquire(LockKind.SHARED).release()
    assert not junk.exists()


def test_wait_for_a_lock_to_be_released(repo: Repository) -> None:
    locks = _locks(repo, refresh_every=0)
    held = locks.acquire(LockKind.EXCLUSIVE)
    timer = threading.Timer(0.2, held.release)
    timer.start()
    with locks.shared(wait=5):
        pass
    timer.join()


@pytest.mark.local_only
def test_refresh_keeps_a_lock_fresh_and_notices_when_it_is_lost(repo: Repository) -> None:
    locks = _locks(repo, refresh_every=0.05, stale_after=60)
    with locks.shared("backup") as held:
        taken = held.info.time
        os.utime(root(repo) / held.path, (0, 0))
        deadline = time.monotonic() + 5
        while locks.list_locks()[0].refreshed < taken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert locks.list_locks()[0].refreshed >= taken
        assert locks.list_locks()[0].time == taken
        (root(repo) / held.path).unlink()  # what another process does to a stale lock
        while not held.lost and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(LockError, match="removed as stale"):
            held.check()
    assert locks.list_locks() == []
