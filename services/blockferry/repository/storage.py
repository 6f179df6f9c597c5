"""The storage a repository lives on: named objects behind one interface.

Everything above this module names objects (``packs/ab/<id>.pack``, ``index/<id>.idx``)
and never sees a path, a file descriptor, a rename or a process id; the backends below
it (:mod:`local_storage`, and the share and object-store backends of the gateway) keep
the guarantees written in :class:`Storage`'s docstring. Cross-cutting concerns wrap a
storage instead of adding flags to it: :class:`~blockferry.repository.storage_views.ReadOnlyStorage`
and :class:`~blockferry.repository.storage_views.MeteredStorage`.

Object names are ``/``-separated, relative to the repository's root, made of the
characters ids and names may hold (:mod:`ids`); no component starts with a dot (the
backends keep their temporaries under such names and never list them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias

from blockferry.core.errors import RepositoryError

Data: TypeAlias = bytes | bytearray | memoryview
Parts: TypeAlias = Data | Sequence[Data]
"""What a put takes: the object's bytes, or its parts one after the other."""


class ObjectNotFound(RepositoryError):
    """The named object does not exist."""


class ObjectExists(RepositoryError):
    """An object that must be new exists already (a put-if-absent lost the race)."""


class StorageReadOnly(RepositoryError):
    """A write was attempted through a read-only view of a repository."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing or a stat sees it."""

    name: str
    size: int
    modified: datetime
    """When it was last written or touched, by the storage's own clock (UTC)."""


class ObjectWriter(Protocol):
    """A new object written part by part, then published whole by :meth:`commit`.

    Until the commit nothing is visible under ``name``; a writer that is aborted or
    whose process dies leaves at most a temporary that :meth:`Storage.remove_leftovers`
    reaps, and never while the writer lives. A backend without append (an object
    store) spools the parts locally and puts them at the commit.
    """

    @property
    def name(self) -> str:
        """The object's name once committed."""
        ...

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    def write(self, parts: Sequence[Data]) -> None:
        """Append ``parts``. Raises RepositoryFull or RepositoryError; the writer is
        then aborted."""
        ...

    def commit(self) -> None:
        """Publish the object, durably, as if by :meth:`Storage.put_new`.

        Raises:
            ObjectExists: ``name`` exists; the writer is aborted.
            RepositoryFull, RepositoryError: the writer is aborted.
        """
        ...

    def abort(self) -> None:
        """Forget the object; safe to call twice and after a commit (then it does nothing)."""
        ...


class WriterBase:
    """What every backend's :class:`ObjectWriter` shares: the object's name, the bytes
    written so far, and the error of a writer used once committed or aborted."""

    def __init__(self, name: str, where: str) -> None:
        self._name = name
        self._where = where
        self._size = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    def _finished(self) -> RepositoryError:
        return RepositoryError(f"writing {self._where}: the writer is committed or aborted")


class Storage(Protocol):
    """Named, immutable-once-published objects: the contract every backend keeps.

    * **Atomic puts.** :meth:`put`, :meth:`put_new` and :meth:`ObjectWriter.commit`
      publish an object whole or not at all, durably before they return: after a
      crash a reader finds the old object (or none) or the new one, never a part.
    * **Put-if-absent.** :meth:`put_new` and a writer's commit fail with
      :class:`ObjectExists` when the name exists: of two racing creators exactly one
      wins. This is what commits restore points and takes locks.
    * **Read-after-write.** Once a put, commit, touch or delete returned, every
      :meth:`get`, :meth:`stat` and :meth:`list_objects` by any process sees it.
    * **Ranged gets** are meant for objects never replaced (packs): while a backend
      keeps an object open for them, a ranged get may return the bytes of the version
      this process first read. Objects replaced in place (locks, the index
      snapshot) are read whole with :meth:`get`, or read once.
    * **Deletes** are durable when :meth:`delete` returns, in the order of its names,
      so a caller can remove an index before what it indexes.
    * **Times** (:attr:`ObjectInfo.modified`) come from the storage's clock; a backend
      does not promise they agree with the caller's. Callers compare them only with
      each other (lock heartbeats); GC compares generations (:mod:`generations`).

    Errors: :class:`ObjectNotFound` for a missing object,
    :class:`~blockferry.core.errors.RepositoryFull` when the backend has no room,
    :class:`~blockferry.core.errors.RepositoryError` for everything else, each
    message naming the object (:meth:`where`) and the cause.
    """

    def where(self, name: str = "") -> str:
        """The object ``name`` (or the storage itself) as an operator finds it: a
        path, a URL. For messages only."""
        ...

    def get(self, name: str) -> bytes:
        """The whole object."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer if the object ends before."""
        ...

    def stat(self, name: str) -> ObjectInfo:
        """Size and modification time of one object."""
        ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in no particular order;
        temporaries are never listed. ``prefix`` is empty or ends with ``/``."""
        ...

    def put(self, name: str, data: Parts) -> None:
        """Create or replace an object, atomically and durably."""
        ...

    def put_new(self, name: str, data: Parts) -> None:
        """Create an object that must not exist; raises :class:`ObjectExists`."""
        ...

    def writer(self, name: str) -> ObjectWriter:
        """Start a new object written in parts (a pack); see :class:`ObjectWriter`."""
        ...

    def touch(self, name: str) -> None:
        """Set an object's modification time to now without changing its bytes (a
        lock's heartbeat); raises :class:`ObjectNotFound` rather than creating it."""
        ...

    def delete(self, *names: str) -> None:
        """Remove objects, in order and durably; absent ones are not an error."""
        ...

    def leftovers(self) -> list[ObjectInfo]:
        """Temporaries left by writers and puts, named by :meth:`where` (for check)."""
        ...

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        """Remove the temporaries older than ``min_age`` seconds whose writer is no
        longer alive (in any process); returns how many went."""
        ...

    def close(self) -> None:
        """Release cached handles; the storage stays usable."""
        ...


def checked_name(name: str) -> str:
    """``name`` if it is an object's name (module docstring), else RepositoryError."""
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") or part.startswith(".") for part in name.split("/"))
    ):
        raise RepositoryError(f"invalid object name {name!r}")
    return name


def check_prefix(prefix: str) -> None:
    """Refuse a listing prefix that is not empty and does not end with ``/``."""
    if prefix and not prefix.endswith("/"):
        raise RepositoryError(f"listing {prefix!r}: a prefix ends with '/'")


def parts_of(data: Parts) -> Sequence[Data]:
    """``data`` as a sequence of parts."""
    return [data] if isinstance(data, bytes | bytearray | memoryview) else data
