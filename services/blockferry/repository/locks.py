"""Repository locks: shared for backup, restore and verify; exclusive for prune and GC.

A lock is a small JSON file ``locks/<kind>-<lock-id>.json`` naming its host, its
process and the time it was last refreshed. Taking a lock is optimistic:
write our lock file, then list ``locks/``; if a conflicting lock (an exclusive
one for a shared request, any other for an exclusive request) is there,
remove ours and retry until ``wait`` runs out. Two takers that race both see
each other and both back off, so two conflicting locks are never both held.

A held lock is refreshed every ``refresh_every`` seconds by a daemon thread,
which sets the file's modification time to now (``utime``: atomic, and it
fails rather than recreating a file another process removed). Another process
treats a lock as stale, and removes it, when

* it was taken on the same host by a process that no longer exists, or
* it was not refreshed for ``stale_after`` seconds (default 10 minutes),

so a crashed process never blocks the repository for long. A holder whose
lock file was removed as stale notices at its next refresh
(:attr:`HeldLock.lost`) and must stop writing.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from blockferry.core.errors import BlockferryError, LockError
from blockferry.repository.files import (
    fsync_dir,
    is_temporary,
    read_file,
    remove_quietly,
    storage_error,
    write_atomic,
)
from blockferry.repository.ids import format_time, parse_time, utc_now

log = logging.getLogger(__name__)

LOCK_VERSION = 1
STALE_AFTER = 600.0
"""Seconds after its last refresh when a lock counts as stale, on any host."""
REFRESH_EVERY = 60.0
"""Seconds between refreshes of a held lock."""
LOCK_SUFFIX = ".json"


class LockKind(enum.StrEnum):
    """What a lock allows others to do at the same time."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"

    def conflicts_with(self, other: LockKind) -> bool:
        """Whether a lock of this kind cannot be held together with ``other``."""
        return self is LockKind.EXCLUSIVE or other is LockKind.EXCLUSIVE


@dataclass(frozen=True)
class LockInfo:
    """The contents of one lock file."""

    name: str
    kind: LockKind
    host: str
    pid: int
    time: datetime
    purpose: str
    refreshed: datetime
    """The file's modification time: when the holder last refreshed it."""

    def describe(self) -> str:
        """``exclusive lock of host pid 123 (gc), refreshed 2026-...Z``."""
        purpose = f" ({self.purpose})" if self.purpose else ""
        return (
            f"{self.kind} lock of {self.host} pid {self.pid}{purpose}, taken "
            f"{format_time(self.time)}, refreshed {format_time(self.refreshed)}"
        )

    def to_json(self) -> bytes:
        """The lock file's bytes."""
        document = {
            "version": LOCK_VERSION,
            "kind": str(self.kind),
            "host": self.host,
            "pid": self.pid,
            "time": format_time(self.time),
            "purpose": self.purpose,
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, name: str, data: bytes, refreshed: datetime) -> LockInfo:
        """Parse a lock file; raises ValueError, KeyError or TypeError when malformed."""
        document = json.loads(data)
        if document["version"] != LOCK_VERSION:
            raise ValueError(f"unsupported lock version {document['version']!r}")
        return cls(
            name=name,
            kind=LockKind(document["kind"]),
            host=str(document["host"]),
            pid=int(document["pid"]),
            time=parse_time(str(document["time"])),
            purpose=str(document["purpose"]),
            refreshed=refreshed,
        )


class HeldLock:
    """A lock this process holds; refreshed in the background until released."""

    def __init__(self, locks: RepositoryLocks, info: LockInfo) -> None:
        self.info = info
        self.path = locks.directory / info.name
        self._locks = locks
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if locks.refresh_every > 0:
            self._thread = threading.Thread(
                target=self._refresh_loop, name=f"lock-refresh-{info.name}", daemon=True
            )
            self._thread.start()

    @property
    def kind(self) -> LockKind:
        """Shared or exclusive."""
        return self.info.kind

    @property
    def lost(self) -> bool:
        """Whether another process removed this lock as stale."""
        return self._lost

    def check(self) -> None:
        """Raise LockError if the lock was lost; call before committing work under it."""
        if self._lost:
            raise LockError(
                f"{self.info.kind} lock {self.path} was removed as stale by another process"
            )

    def refresh(self) -> None:
        """Set the lock file's modification time to now; notice if it was removed."""
        if self._lost:
            return
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self._lost = True
            log.error("lock %s was removed by another process; it is lost", self.path)
        except OSError as exc:
            raise storage_error(f"refreshing lock {self.path}", exc) from exc

    def release(self) -> None:
        """Stop refreshing and remove the lock file. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if not self._lost:
            remove_quietly(self.path)
            with contextlib.suppress(BlockferryError):
                fsync_dir(self.path.parent)

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._locks.refresh_every):
            try:
                self.refresh()
            except BlockferryError as exc:
                log.warning("refreshing lock %s: %s", self.path, exc)


class RepositoryLocks:
    """The lock files of one repository (``locks/``)."""

    def __init__(
        self,
        directory: Path,
        *,
        stale_after: float = STALE_AFTER,
        refresh_every: float = REFRESH_EVERY,
        host: str | None = None,
    ) -> None:
        self.directory = directory
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.host = host if host is not None else socket.gethostname()

    def list_locks(self) -> list[LockInfo]:
        """Every lock file present; an unreadable one is listed with its mtime as time."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error(f"listing locks in {self.directory}", exc) from exc
        locks = []
        for name in names:
            if is_temporary(name) or not name.endswith(LOCK_SUFFIX):
                continue
            path = self.directory / name
            try:
                refreshed = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                locks.append(LockInfo.from_json(name, read_file(path), refreshed))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError, BlockferryError) as exc:
                locks.append(self._unreadable(path, exc))
        return locks

    def is_stale(self, info: LockInfo, now: datetime | None = None) -> bool:
        """Whether ``info`` belongs to a dead process or was not refreshed in time."""
        now = now or utc_now()
        if (now - info.refreshed).total_seconds() > self.stale_after:
            return True
        return info.host == self.host and info.pid > 0 and not _process_alive(info.pid)

    def remove_stale(self) -> list[LockInfo]:
        """Remove stale lock files; returns what was removed."""
        removed = []
        for info in self.list_locks():
            if self.is_stale(info):
                log.warning("removing stale %s", info.describe())
                remove_quietly(self.directory / info.name)
                removed.append(info)
        if removed:
            fsync_dir(self.directory)
        return removed

    def acquire(self, kind: LockKind, *, purpose: str = "", wait: float = 0.0) -> HeldLock:
        """Take a lock, retrying for up to ``wait`` seconds while a conflicting one is held.

        Raises:
            LockError: naming the conflicting lock.
        """
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            self.remove_stale()
            now = utc_now()
            info = LockInfo(
                name=f"{kind}-{secrets.token_hex(8)}{LOCK_SUFFIX}",
                kind=kind,
                host=self.host,
                pid=os.getpid(),
                time=now,
                purpose=purpose,
                refreshed=now,
            )
            path = self.directory / info.name
            write_atomic(path, info.to_json())
            conflicts = [
                other
                for other in self.list_locks()
                if other.name != info.name and kind.conflicts_with(other.kind)
            ]
            if not conflicts:
                return HeldLock(self, info)
            remove_quietly(path)
            fsync_dir(self.directory)
            if time.monotonic() >= deadline:
                raise LockError(
                    f"taking a {kind} lock in {self.directory}: held by "
                    f"{conflicts[0].describe()}; wait for it to finish (a lock not refreshed "
                    f"for {self.stale_after:.0f} s is recovered automatically)"
                )
            time.sleep(min(delay * (1 + random.random()), max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    @contextlib.contextmanager
    def shared(self, purpose: str = "", *, wait: float = 0.0) -> Iterator[HeldLock]:
        """Hold a shared lock for the ``with`` block."""
        with self.acquire(LockKind.SHARED, purpose=purpose, wait=wait) as held:
            yield held

    @contextlib.contextmanager
    def exclusive(self, purpose: str = "", *, wait: float = 0.0) -> Iterator[HeldLock]:
        """Hold an exclusive lock for the ``with`` block."""
        with self.acquire(LockKind.EXCLUSIVE, purpose=purpose, wait=wait) as held:
            yield held

    def _unreadable(self, path: Path, exc: Exception) -> LockInfo:
        log.warning("lock file %s is unreadable: %s", path, exc)
        kind = LockKind.SHARED if path.name.startswith("shared-") else LockKind.EXCLUSIVE
        try:
            mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            mtime = utc_now()
        return LockInfo(path.name, kind, "unknown", 0, mtime, "unreadable lock file", mtime)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
