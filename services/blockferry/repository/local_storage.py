"""The local backend: a repository's objects as files under one directory.

An object ``a/b/c`` is the file ``<root>/a/b/c``. Every file is written under a
temporary name in its final directory (``.c.tmp-<random>``), held under an exclusive
``flock`` by its writer while it is open, fsynced, published by ``os.replace`` (a put)
or ``os.link`` (a put-if-absent: it fails if the name exists), and the directory is
fsynced. So a reader sees a whole file or none, and :meth:`remove_leftovers` can tell
a live writer's temporary from one a killed process left. Ranged gets read with
``pread`` on descriptors kept open (at most ``open_limit``, least recently used
closed first), so concurrent reads of one pack share a descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from blockferry.core.errors import RepositoryError
from blockferry.repository.files import (
    SECRET_MODE,
    create_locked,
    fsync_dir,
    make_dirs,
    remove_if_abandoned,
    remove_quietly,
    storage_error,
    temporary_path,
    write_all,
    write_atomic,
)
from blockferry.repository.storage import (
    Data,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Parts,
    WriterBase,
    check_prefix,
    checked_name,
)

SHARED_ABANDONED_S = 3600.0
"""On a shared directory, a temporary this old (by the share's clock) has no live writer:
another host's writer may hold it under a flock this host cannot see."""

# File systems without hard links (some shares) refuse os.link with these; a
# put-if-absent then checks and renames, which two racing creators could both pass.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


class LocalStorage:
    """A repository's objects as files under ``root``; see the module docstring and
    :class:`~blockferry.repository.storage.Storage` for the guarantees."""

    def __init__(self, root: Path, *, open_limit: int = 64, shared: bool = False) -> None:
        """``shared``: the directory is a share other hosts mount too (NFS, SMB), whose
        flocks and clocks a host cannot trust: a temporary is reaped only once older than
        :data:`SHARED_ABANDONED_S` by the share's own clock."""
        self.root = Path(root).absolute()
        self.shared = shared
        self._open = _OpenFiles(open_limit)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def where(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    def path(self, name: str) -> Path:
        """The file of object ``name`` (for this backend's own tests and tools)."""
        return self.root / checked_name(name)

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str) -> bytes:
        path = self.path(name)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"reading {path}: no such object") from exc
        except IsADirectoryError as exc:
            raise ObjectNotFound(f"reading {path}: a directory, not an object") from exc
        except OSError as exc:
            raise storage_error(f"reading {path}", exc) from exc

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        path = self.path(name)
        with self._open.borrow(path) as fd:
            try:
                return os.pread(fd, length, offset)
            except OSError as exc:
                raise storage_error(f"reading {length} bytes at {offset} of {path}", exc) from exc

    def stat(self, name: str) -> ObjectInfo:
        path = self.path(name)
        try:
            status = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"reading {path}: no such object") from exc
        except OSError as exc:
            raise storage_error(f"reading {path}", exc) from exc
        return _info(name, status)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        check_prefix(prefix)
        found: list[ObjectInfo] = []
        self._walk(self.root / prefix, prefix, found, leftovers=False)
        return found

    # -- writes ---------------------------------------------------------------------------

    def put(self, name: str, data: Parts) -> None:
        self._put(name, data, replace=True)

    def put_new(self, name: str, data: Parts) -> None:
        self._put(name, data, replace=False)

    def writer(self, name: str) -> LocalWriter:
        path = self.path(name)
        temp = temporary_path(path)
        fd = _create_temporary(temp)
        return LocalWriter(self, name, path, temp, fd)

    def touch(self, name: str) -> None:
        path = self.path(name)
        try:
            os.utime(path)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"touching {path}: no such object") from exc
        except OSError as exc:
            raise storage_error(f"touching {path}", exc) from exc

    def delete(self, *names: str) -> None:
        pending: Path | None = None  # a directory whose removals are not yet durable
        for name in names:
            path = self.path(name)
            if pending is not None and pending != path.parent:
                self._settle(pending)
                pending = None
            self._open.forget(path)
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise storage_error(f"removing {path}", exc) from exc
            pending = path.parent
        if pending is not None:
            self._settle(pending)

    # -- housekeeping ---------------------------------------------------------------------

    def leftovers(self) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        self._walk(self.root, "", found, leftovers=True)
        return found

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        if self.shared:
            cutoff = self._share_now() - max(min_age, SHARED_ABANDONED_S)
        else:
            cutoff = time.time() - min_age
        removed = 0
        for info in self.leftovers():
            if info.modified.timestamp() > cutoff:
                continue
            path = self.root / info.name
            if path.is_dir():  # a commit directory of format v1, which no writer holds
                with contextlib.suppress(OSError):
                    shutil.rmtree(path)
                    removed += 1
            elif remove_if_abandoned(path):
                removed += 1
        return removed

    def close(self) -> None:
        self._open.close()

    # -- internals ------------------------------------------------------------------------

    def _share_now(self) -> float:
        """The share's clock: the modification time it gives a probe file."""
        probe = temporary_path(self.root / "probe")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                return os.fstat(fd).st_mtime
            finally:
                os.close(fd)
                remove_quietly(probe)
        except OSError as exc:
            raise storage_error(f"reading the clock of {self.root}", exc) from exc

    def _put(self, name: str, data: Parts, *, replace: bool) -> None:
        write_atomic(
            self.path(name),
            data,
            create=_create_temporary,
            publish=functools.partial(self._publish, replace=replace),
        )

    def _publish(self, temp: Path, path: Path, *, replace: bool) -> None:
        """Give ``temp`` its final name (``temp`` is gone afterwards unless this raises)."""
        self._open.forget(path)
        if replace:
            os.replace(temp, path)
            return
        try:
            os.link(temp, path)
        except FileExistsError as exc:
            raise ObjectExists(f"writing {path}: it exists already") from exc
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if path.exists():
                raise ObjectExists(f"writing {path}: it exists already") from exc
            os.replace(temp, path)
            return
        remove_quietly(temp)

    def _settle(self, directory: Path) -> None:
        """Make removals in ``directory`` durable, and remove it if it is now empty and
        not one of the repository's top-level directories."""
        fsync_dir(directory)
        if directory.parent != self.root and directory != self.root:
            with contextlib.suppress(OSError):  # not empty, or a writer got there first
                directory.rmdir()
                fsync_dir(directory.parent)

    def _walk(
        self, directory: Path, prefix: str, found: list[ObjectInfo], *, leftovers: bool
    ) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise storage_error(f"listing {directory}", exc) from exc
        for entry in entries:
            name = prefix + entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if entry.name.startswith("."):
                    if leftovers and ".tmp" in entry.name:
                        found.append(_info(name, entry.stat(follow_symlinks=False)))
                    continue
                if is_dir:
                    self._walk(Path(entry.path), name + "/", found, leftovers=leftovers)
                elif not leftovers:
                    found.append(_info(name, entry.stat()))
            except FileNotFoundError:
                continue  # removed while listing
            except OSError as exc:
                raise storage_error(f"listing {entry.path}", exc) from exc


class LocalWriter(WriterBase):
    """An object being written under a temporary name; see :class:`ObjectWriter`."""

    def __init__(self, storage: LocalStorage, name: str, path: Path, temp: Path, fd: int) -> None:
        super().__init__(name, str(path))
        self._storage = storage
        self._path = path
        self._temp = temp
        self._fd: int | None = fd

    def write(self, parts: Sequence[Data]) -> None:
        fd = self._require_open()
        try:
            length = sum(len(part) for part in parts)
            written = os.writev(fd, parts)
            if written < length:
                write_all(fd, b"".join(parts)[written:])
        except OSError as exc:
            self.abort()
            raise storage_error(f"writing {self._temp}", exc) from exc
        self._size += length

    def commit(self) -> None:
        fd = self._require_open()
        try:
            os.fsync(fd)
            self._storage._publish(self._temp, self._path, replace=False)
        except OSError as exc:
            self.abort()
            raise storage_error(f"writing {self._path}", exc) from exc
        except BaseException:
            self.abort()
            raise
        self._close()
        fsync_dir(self._path.parent)

    def abort(self) -> None:
        if self._fd is not None:
            remove_quietly(self._temp)
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require_open(self) -> int:
        if self._fd is None:
            raise self._finished()
        return self._fd


def _create_temporary(temp: Path) -> int:
    """A locked temporary file, its directory made first if missing."""
    for attempt in range(2):
        try:
            return create_locked(temp, SECRET_MODE)
        except FileNotFoundError as exc:
            if attempt:
                raise RepositoryError(f"creating {temp}: its directory keeps disappearing") from exc
            make_dirs(temp.parent)
        except OSError as exc:
            raise storage_error(f"creating {temp}", exc) from exc
    raise AssertionError("unreachable")


def _info(name: str, status: os.stat_result) -> ObjectInfo:
    return ObjectInfo(name, status.st_size, datetime.fromtimestamp(status.st_mtime, UTC))


class _OpenFiles:
    """Open read descriptors shared by ranged gets, least recently used closed first,
    never while a read is using one."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._users: dict[int, int] = {}
        self._retired: set[int] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, path: Path) -> Iterator[int]:
        fd = self._acquire(path)
        try:
            yield fd
        finally:
            self._release(fd)

    def forget(self, path: Path) -> None:
        """Close the descriptor of ``path`` (its file is being replaced or removed)."""
        with self._lock:
            fd = self._fds.pop(path, None)
            if fd is not None:
                self._retire(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                self._retire(fd)
            self._fds.clear()

    def _acquire(self, path: Path) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                self._fds.move_to_end(path)
            else:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except (FileNotFoundError, NotADirectoryError) as exc:
                    raise ObjectNotFound(f"reading {path}: no such object") from exc
                except OSError as exc:
                    raise storage_error(f"opening {path}", exc) from exc
                self._fds[path] = fd
                while len(self._fds) > self._limit:
                    _, old = self._fds.popitem(last=False)
                    self._retire(old)
            self._users[fd] = self._users.get(fd, 0) + 1
            return fd

    def _release(self, fd: int) -> None:
        with self._lock:
            self._users[fd] -= 1
            if self._users[fd] == 0:
                del self._users[fd]
                if fd in self._retired:
                    self._retired.discard(fd)
                    os.close(fd)

    def _retire(self, fd: int) -> None:
        if fd in self._users:
            self._retired.add(fd)
        else:
            os.close(fd)
