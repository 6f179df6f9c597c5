"""Write once, publish by rename: the only way repository files come to exist.

Every file is written under a temporary name in its final directory, fsynced,
renamed into place with :func:`os.replace`, and the directory is fsynced, so a
reader sees either nothing or the whole file, even after a crash. Temporary
names start with a dot and readers skip every name that starts with a dot.

A full file system (``ENOSPC``, ``EDQUOT``) surfaces as
:class:`~blockferry.core.errors.RepositoryFull` and the temporary file is
removed; other OS errors become :class:`~blockferry.core.errors.RepositoryError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from blockferry.core.errors import BlockferryError, RepositoryError, RepositoryFull

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# File systems that cannot fsync a directory (some network shares) say so with these.
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF})
FILE_MODE = 0o644
SECRET_MODE = 0o600
"""Files holding secrets, and every file of a repository."""


def storage_error(action: str, exc: OSError) -> RepositoryError:
    """Translate an OSError met while ``action`` into the repository's error hierarchy."""
    if exc.errno in NO_SPACE_ERRNOS:
        return RepositoryFull(
            f"{action}: no space left on the repository's file system ({exc.strerror}); "
            "free space or grow the volume, then retry"
        )
    return RepositoryError(f"{action}: {exc}")


def is_temporary(name: str) -> bool:
    """Whether a directory entry is a temporary (or hidden) name that readers skip."""
    return name.startswith(".")


def temporary_path(path: Path) -> Path:
    """A fresh temporary name next to ``path``."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and creations in it are durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise storage_error(f"opening directory {path}", exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise storage_error(f"syncing directory {path}", exc) from exc
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that gained an entry."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(exist_ok=True)
        except OSError as exc:
            raise storage_error(f"creating directory {directory}", exc) from exc
        fsync_dir(directory.parent)


def write_atomic(
    path: Path,
    data: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview],
    *,
    mode: int = FILE_MODE,
    create: Callable[[Path], int] | None = None,
    publish: Callable[[Path, Path], None] = os.replace,
) -> None:
    """Publish ``data`` (or its parts one after the other) as ``path`` (with ``mode``):
    temp file, fsync, ``publish`` (a rename: an existing ``path`` is replaced
    atomically), fsync the directory. ``create`` makes the locked temporary file
    (by default :func:`create_locked`) and returns its descriptor.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    temp = temporary_path(path)
    try:
        fd = create(temp) if create is not None else create_locked(temp, mode)
        try:
            for part in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                write_all(fd, part)
            os.fsync(fd)
        finally:
            os.close(fd)
        publish(temp, path)
    except OSError as exc:
        remove_quietly(temp)
        raise storage_error(f"writing {path}", exc) from exc
    except BaseException:
        remove_quietly(temp)
        raise
    fsync_dir(path.parent)


def create_locked(path: Path, mode: int = FILE_MODE) -> int:
    """Create the temporary ``path`` and hold an exclusive flock on it while its
    descriptor is open, so that :func:`remove_if_abandoned` leaves it alone.

    The lock is taken blocking: a sweeper may be inspecting the just-created file; if
    it removed it meanwhile, the file is created again.
    """
    for _ in range(3):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            remove_quietly(path)
            raise
        os.close(fd)
    raise RepositoryError(f"creating {path}: removed by another process three times")


def remove_if_abandoned(path: Path) -> bool:
    """Remove a temporary unless a live writer holds its flock; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(f"opening temporary {path}", exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(f"removing temporary {path}", exc) from exc
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes:
    """Read a whole file; OS errors become RepositoryError (FileNotFoundError passes)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise storage_error(f"reading {path}", exc) from exc


def remove_file(path: Path) -> None:
    """Remove a file if it exists (without syncing its directory); errors are raised."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise storage_error(f"removing {path}", exc) from exc


def remove_quietly(path: Path) -> None:
    """Remove a file if it exists, ignoring errors (used while cleaning up after one)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_tree(path: Path) -> None:
    """Remove a directory tree, then fsync its parent."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise storage_error(f"removing {path}", exc) from exc
    fsync_dir(path.parent)


def remove_tree_quietly(path: Path) -> None:
    """Remove a directory tree while cleaning up after an error; errors are ignored."""
    with contextlib.suppress(BlockferryError):
        remove_tree(path)


def list_dir(directory: Path) -> list[str]:
    """Names in ``directory``; an absent directory is empty."""
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise storage_error(f"listing {directory}", exc) from exc
