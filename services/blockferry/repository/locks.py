"""Repository locks: shared for backup, commit, restore and verify; exclusive for prune,
GC, rebuild-index and set-aside. The protocol is written down in FORMAT.md ("Locks") so
that a storage without flock or rename (an object store: conditional create, leases)
can keep the same rules.

A lock is a small JSON object ``locks/<kind>-<lock-id>.json`` naming its owner: a random
id of the holding process, not its host name and pid (containers share host names and
pids). Taking a lock is optimistic: write our lock file, then list ``locks/``; if a
conflicting lock (an exclusive one for a shared request, any other for an exclusive
request) is there, remove ours and retry until ``wait`` runs out. Two takers that race
both see each other and both back off, so two conflicting locks are never both held.

**Heartbeat.** A held lock is refreshed every ``refresh_every`` seconds by a daemon
thread, which touches its object (:meth:`Storage.touch`: it fails rather than
recreating an object another process removed).

**Stale.** Another process removes a lock as stale when its heartbeat is older than
``stale_after`` seconds, or at once when the lock's owner ran on the same kernel (boot
id) in the same pid namespace as the observer and that process (pid and start time) no
longer exists. The second rule is what recovers a crashed process's lock quickly; it
never applies across containers or hosts, where only the heartbeat counts. A heartbeat's
age is measured on the storage's clock alone: the difference between the lock's
modification time and that of the lock the observer has just written, so no host's
clock is compared with the storage's or with another host's.

**Fencing.** A holder may act on its lock only while its own last heartbeat is younger
than half of ``stale_after`` (on its monotonic clock) and its object is still there:
:meth:`HeldLock.check`, called before each destructive step. A holder that was stopped
(SIGSTOP, a paused VM) or whose lock was taken over after a clock jump therefore stops
before its next delete; at most the one step already under way when the takeover
happened can still complete.

**Reserve.** ``locks/reserve`` holds a few KiB that an exclusive lock gives up when its
object cannot be written for lack of space, so that GC and prune can start on a full file
system (and free it); it is made again when a lock is released and there is room.
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
from datetime import datetime
from pathlib import Path

from blockferry.core.errors import BlockferryError, LockBusy, LockLost, RepositoryFull
from blockferry.failpoints import Point
from blockferry.repository import layout
from blockferry.repository.hooks import Hooks
from blockferry.repository.ids import format_time, parse_time, utc_now
from blockferry.repository.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)

LOCK_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 lock files (host and pid, no owner) are still understood: heartbeat only."""
STALE_AFTER = 600.0
"""Seconds after its last refresh when a lock counts as stale, on any host."""
REFRESH_EVERY = 60.0
"""Seconds between refreshes of a held lock."""
LOCK_SUFFIX = ".json"
RESERVE = layout.lock("reserve")
RESERVE_BYTES = 64 * 1024


class LockKind(enum.StrEnum):
    """What a lock allows others to do at the same time."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"
    PIN = "pin"
    """Not a lock: a restore point being read (an export), which prune keeps."""

    def conflicts_with(self, other: LockKind) -> bool:
        """Whether a lock of this kind cannot be held together with ``other``."""
        if LockKind.PIN in (self, other):
            return False
        return self is LockKind.EXCLUSIVE or other is LockKind.EXCLUSIVE


@dataclass(frozen=True)
class Process:
    """Where a lock's owner runs, precisely enough to tell that it has died.

    Comparable only between observers that share the kernel (``boot_id``) and the pid
    namespace; ``start`` (clock ticks since boot) tells a reused pid apart.
    """

    boot_id: str
    pid_namespace: int
    pid: int
    start: int

    @classmethod
    def current(cls) -> Process | None:
        """This process, or None where /proc does not say (then heartbeats alone count)."""
        try:
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            namespace = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            return None
        pid = os.getpid()
        start = _start_ticks(pid)
        return None if start is None else cls(boot_id, namespace, pid, start)

    def is_gone(self, observer: Process | None) -> bool:
        """Whether this process has certainly ended, as ``observer`` can tell."""
        if observer is None or (self.boot_id, self.pid_namespace) != (
            observer.boot_id,
            observer.pid_namespace,
        ):
            return False
        return _start_ticks(self.pid) != self.start

    def to_document(self) -> dict[str, object]:
        return {
            "boot_id": self.boot_id,
            "pid_namespace": self.pid_namespace,
            "pid": self.pid,
            "start": self.start,
        }

    @classmethod
    def from_document(cls, document: dict[str, object]) -> Process:
        return cls(
            boot_id=str(document["boot_id"]),
            pid_namespace=_whole(document["pid_namespace"]),
            pid=_whole(document["pid"]),
            start=_whole(document["start"]),
        )


@dataclass(frozen=True)
class LockInfo:
    """The contents of one lock file."""

    name: str
    kind: LockKind
    owner: str
    """A random id of the holding process (per :class:`RepositoryLocks`)."""
    host: str
    """For people only."""
    pid: int
    """For people only."""
    time: datetime
    purpose: str
    refreshed: datetime
    """The file's modification time: when the holder last refreshed it (the heartbeat)."""
    process: Process | None = None
    restore_point: str = ""
    """The restore point a pin keeps."""

    def describe(self) -> str:
        """``exclusive lock of host pid 123 (gc), refreshed 2026-...Z``."""
        purpose = f" ({self.purpose})" if self.purpose else ""
        what = f"pin of restore point {self.restore_point}" if self.restore_point else "lock"
        return (
            f"{self.kind} {what} of {self.host} pid {self.pid}{purpose}, taken "
            f"{format_time(self.time)}, refreshed {format_time(self.refreshed)}"
        )

    def to_json(self) -> bytes:
        """The lock file's bytes."""
        document = {
            "version": LOCK_VERSION,
            "kind": str(self.kind),
            "owner": self.owner,
            "host": self.host,
            "pid": self.pid,
            "time": format_time(self.time),
            "purpose": self.purpose,
            "process": self.process.to_document() if self.process else None,
        }
        if self.restore_point:
            document["restore_point"] = self.restore_point
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, name: str, data: bytes, refreshed: datetime) -> LockInfo:
        """Parse a lock file; raises ValueError, KeyError or TypeError when malformed."""
        document = json.loads(data)
        if document["version"] not in READABLE_VERSIONS:
            raise ValueError(f"unsupported lock version {document['version']!r}")
        process = document.get("process")
        return cls(
            name=name,
            kind=LockKind(document["kind"]),
            owner=str(document.get("owner", "")),
            host=str(document["host"]),
            pid=int(document["pid"]),
            time=parse_time(str(document["time"])),
            purpose=str(document["purpose"]),
            refreshed=refreshed,
            process=Process.from_document(process) if process else None,
            restore_point=str(document.get("restore_point", "")),
        )


class HeldLock:
    """A lock this process holds; refreshed in the background until released."""

    def __init__(self, locks: RepositoryLocks, info: LockInfo) -> None:
        self.info = info
        self.path = layout.lock(info.name)
        self._locks = locks
        self._lost = ""
        self._heartbeat = time.monotonic()
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
        """Whether this lock can no longer be relied on (see :meth:`check`)."""
        return bool(self._lost)

    def check(self) -> None:
        """Fencing, before each destructive step: raise LockLost unless the lock is still
        this holder's, i.e. its file is there and its last heartbeat is younger than
        half the stale time (older, another process may be taking it over)."""
        if not self._lost:
            silent = time.monotonic() - self._heartbeat
            if silent > self._locks.stale_after / 2:
                self._lose(f"not refreshed for {silent:.0f} s (was this process stopped?)")
            elif not self._present():
                self._lose("removed as stale by another process")
        if self._lost:
            raise LockLost(
                f"{self.info.kind} lock {self.path} ({self.info.purpose}) is lost: "
                f"{self._lost}; stopping before anything else is changed"
            )

    def refresh(self) -> None:
        """Touch the lock object; notice if it was removed."""
        if self._lost:
            return
        try:
            self._locks.storage.touch(self.path)
        except ObjectNotFound:
            self._lose("removed as stale by another process")
            return
        self._heartbeat = time.monotonic()

    def _present(self) -> bool:
        try:
            self._locks.storage.stat(self.path)
        except ObjectNotFound:
            return False
        return True

    def release(self) -> None:
        """Stop refreshing and remove the lock file. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if not self._lost:
            self._lost = "released"
            with contextlib.suppress(BlockferryError):
                self._locks.storage.delete(self.path)
            self._locks.make_reserve()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _lose(self, why: str) -> None:
        self._lost = why
        log.error("lock %s is lost: %s", self.path, why)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._locks.refresh_every):
            try:
                self.refresh()
            except BlockferryError as exc:
                log.warning("refreshing lock %s: %s", self.path, exc)


class RepositoryLocks:
    """The lock objects of one repository (``locks/``), taken by one owner."""

    def __init__(
        self,
        storage: Storage,
        *,
        stale_after: float = STALE_AFTER,
        refresh_every: float = REFRESH_EVERY,
        host: str | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.storage = storage
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.host = host if host is not None else socket.gethostname()
        self.owner = secrets.token_hex(16)
        self.process = Process.current()
        self._hooks = hooks or Hooks()

    def list_locks(self) -> list[LockInfo]:
        """Every lock present; an unreadable one is listed with its modification time."""
        locks = []
        for found in sorted(self.storage.list_objects(layout.LOCKS), key=lambda i: i.name):
            name = found.name[len(layout.LOCKS) :]
            if "/" in name or not name.endswith(LOCK_SUFFIX):
                continue
            try:
                locks.append(LockInfo.from_json(name, self.storage.get(found.name), found.modified))
            except ObjectNotFound:
                continue
            except (ValueError, KeyError, TypeError, BlockferryError) as exc:
                log.warning("lock %s is unreadable: %s", self.storage.where(found.name), exc)
                kind = next((k for k in LockKind if name.startswith(f"{k}-")), LockKind.EXCLUSIVE)
                time = found.modified
                locks.append(LockInfo(name, kind, "", "unknown", 0, time, "unreadable lock", time))
        return locks

    def is_stale(self, info: LockInfo, now: datetime | None) -> bool:
        """Whether ``info``'s heartbeat is older than ``stale_after`` at ``now`` (the
        storage's time; None: unknown) or its owner has certainly died."""
        if now is not None and (now - info.refreshed).total_seconds() > self.stale_after:
            return True
        return info.process is not None and info.process.is_gone(self.process)

    def _others(self, ours: str) -> list[LockInfo]:
        """Every lock but ``ours`` (just written), the stale ones removed."""
        present = self.list_locks()
        now = next((info.refreshed for info in present if info.name == ours), None)
        others: list[LockInfo] = []
        stale: list[LockInfo] = []
        for info in present:
            if info.name != ours:
                (stale if self.is_stale(info, now) else others).append(info)
        for info in stale:
            log.warning("removing stale %s", info.describe())
        self.storage.delete(*(layout.lock(info.name) for info in stale))
        return others

    def held_for(self, purpose: str) -> list[LockInfo]:
        """The exclusive locks taken for ``purpose`` (``prune``: of any job) that are
        not stale."""
        present = self.list_locks()
        now = max((info.refreshed for info in present), default=None)
        return [
            info
            for info in present
            if info.kind is LockKind.EXCLUSIVE
            and info.purpose.split(" ", 1)[0] == purpose
            and not self.is_stale(info, now)
        ]

    def pins(self) -> set[str]:
        """The restore points pinned now: those of every pin whose holder may still be
        alive (its heartbeat is measured against the newest lock's, so a pin is kept
        rather than dropped when in doubt)."""
        present = self.list_locks()
        now = max((info.refreshed for info in present), default=None)
        return {
            info.restore_point
            for info in present
            if info.kind is LockKind.PIN and not self.is_stale(info, now)
        }

    def acquire(
        self, kind: LockKind, *, purpose: str = "", wait: float = 0.0, restore_point: str = ""
    ) -> HeldLock:
        """Take a lock, retrying for up to ``wait`` seconds while a conflicting one is held.

        Raises:
            LockBusy: naming the conflicting lock.
            RepositoryFull: the lock file cannot be written even with the reserve given up.
        """
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            now = utc_now()
            info = LockInfo(
                name=f"{kind}-{secrets.token_hex(8)}{LOCK_SUFFIX}",
                kind=kind,
                owner=self.owner,
                host=self.host,
                pid=os.getpid(),
                time=now,
                purpose=purpose,
                refreshed=now,
                process=self.process,
                restore_point=restore_point,
            )
            path = layout.lock(info.name)
            self._write(path, info.to_json(), may_use_reserve=kind is LockKind.EXCLUSIVE)
            conflicts = [
                other for other in self._others(info.name) if kind.conflicts_with(other.kind)
            ]
            if not conflicts:
                return HeldLock(self, info)
            self.storage.delete(path)
            self._hooks.reached(Point.LOCK_BUSY)
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"taking a {kind} lock in {self.storage.where(layout.LOCKS)}: held by "
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

    def make_reserve(self) -> None:
        """Create ``locks/reserve`` if it is missing and there is room; never fails."""
        with contextlib.suppress(BlockferryError):
            try:
                self.storage.stat(RESERVE)
            except ObjectNotFound:
                self.storage.put(RESERVE, bytes(RESERVE_BYTES))

    def _write(self, name: str, data: bytes, *, may_use_reserve: bool) -> None:
        """Write a lock object; on a full storage an exclusive lock (GC, prune: what
        frees space) gives up the reserve and tries once more."""
        try:
            self.storage.put_new(name, data)
        except RepositoryFull:
            if not may_use_reserve:
                raise
            try:
                self.storage.stat(RESERVE)
            except ObjectNotFound:
                raise RepositoryFull(
                    f"taking a lock in {self.storage.where(layout.LOCKS)}: no space left, "
                    "and the lock reserve is used up; free space, then retry"
                ) from None
            log.warning("the repository's storage is full: using the lock reserve")
            self.storage.delete(RESERVE)
            self.storage.put_new(name, data)


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    return int(stat.rsplit(")", 1)[1].split()[19])


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {value!r}")
    return value
