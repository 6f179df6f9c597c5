"""Wrappers over a :class:`~blockferry.repository.storage.Storage`: the same contract,
one concern each, each a :class:`StorageView` that overrides what it changes.

* :class:`ReadOnlyStorage`: what restore, verify and check open; every write raises
  :class:`~blockferry.repository.storage.StorageReadOnly` before reaching the backend.
* :class:`MeteredStorage`: requests, bytes, errors and latency per repository and
  operation as Prometheus metrics, on a registry the caller gives. A backend that
  counts the requests it sends itself (S3: HTTP requests by API call, what the store
  bills) has them exported beside (:meth:`StorageMetrics.count_backend_requests`).
* :class:`SealedStorage`: an encrypted repository's metadata objects sealed on put and
  opened on get, each bound to its name (:mod:`sealing`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from blockferry.core.errors import RepositoryError
from blockferry.repository import layout
from blockferry.repository.sealing import Sealer
from blockferry.repository.storage import (
    Data,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    Parts,
    Storage,
    StorageReadOnly,
    parts_of,
)

T = TypeVar("T")
# Do not change: bound to every sealed metadata object, before its name.
SEALED_OBJECT_BINDING = b"blockferry object "

OPERATIONS = (
    "get",
    "get_range",
    "stat",
    "list",
    "put",
    "put_new",
    "write",
    "commit",
    "touch",
    "delete",
)
"""Operation label values of :class:`StorageMetrics`."""


class StorageView:
    """``base`` as it is: every operation passed through. A view overrides the ones
    it changes."""

    def __init__(self, base: Storage) -> None:
        self.base = base

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"

    def where(self, name: str = "") -> str:
        return self.base.where(name)

    def get(self, name: str) -> bytes:
        return self.base.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.base.get_range(name, offset, length)

    def stat(self, name: str) -> ObjectInfo:
        return self.base.stat(name)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return self.base.list_objects(prefix)

    def put(self, name: str, data: Parts) -> None:
        self.base.put(name, data)

    def put_new(self, name: str, data: Parts) -> None:
        self.base.put_new(name, data)

    def writer(self, name: str) -> ObjectWriter:
        return self.base.writer(name)

    def touch(self, name: str) -> None:
        self.base.touch(name)

    def delete(self, *names: str) -> None:
        self.base.delete(*names)

    def leftovers(self) -> list[ObjectInfo]:
        return self.base.leftovers()

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        return self.base.remove_leftovers(min_age)

    def close(self) -> None:
        self.base.close()


class ReadOnlyStorage(StorageView):
    """``base`` with every write refused."""

    def put(self, name: str, data: Parts) -> None:
        raise self._refused("writing", name)

    def put_new(self, name: str, data: Parts) -> None:
        raise self._refused("writing", name)

    def writer(self, name: str) -> ObjectWriter:
        raise self._refused("writing", name)

    def touch(self, name: str) -> None:
        raise self._refused("touching", name)

    def delete(self, *names: str) -> None:
        raise self._refused("removing", names[0] if names else "")

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        raise self._refused("removing leftovers in", "")

    def _refused(self, action: str, name: str) -> StorageReadOnly:
        return StorageReadOnly(
            f"{action} {self.where(name)}: the repository is open read-only here"
        )


class SealedStorage(StorageView):
    """``base`` with the objects :func:`layout.is_sealed` names sealed by ``sealer``,
    bound to their names: such an object moved to another name does not open. Set
    aside to ``damaged/`` it is bound to the name it had, so it opens there and, moved
    back, where it was."""

    def __init__(self, base: Storage, sealer: Sealer) -> None:
        super().__init__(base)
        self._sealer = sealer

    def get(self, name: str) -> bytes:
        data = self.base.get(name)
        if not layout.is_sealed(name):
            return data
        return self._sealer.open(data, _binding(name), self.base.where(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if layout.is_sealed(name):  # opened whole: a part costs the whole object
            return self.get(name)[offset : offset + length]
        return self.base.get_range(name, offset, length)

    def put(self, name: str, data: Parts) -> None:
        self.base.put(name, self._seal(name, data))

    def put_new(self, name: str, data: Parts) -> None:
        self.base.put_new(name, self._seal(name, data))

    def writer(self, name: str) -> ObjectWriter:
        if layout.is_sealed(name):
            raise RepositoryError(f"writing {self.where(name)} in parts: it is sealed whole")
        return self.base.writer(name)

    def _seal(self, name: str, data: Parts) -> Parts:
        if not layout.is_sealed(name):
            return data
        return self._sealer.seal(b"".join(parts_of(data)), _binding(name))


def _binding(name: str) -> bytes:
    return SEALED_OBJECT_BINDING + name.removeprefix(layout.DAMAGED).encode()


class StorageMetrics:
    """The collectors of :class:`MeteredStorage`, named after the role that serves the
    repositories (``blockferry_target_mover_storage_requests_total``)."""

    def __init__(self, registry: CollectorRegistry, role: str) -> None:
        prefix = f"blockferry_{role.replace('-', '_')}_storage"
        labels = ["repository", "backend", "operation"]
        self.requests = Counter(
            f"{prefix}_requests_total",
            "Requests made to a repository's storage, by backend (file, s3, smb) and operation.",
            labels,
            registry=registry,
        )
        self.errors = Counter(
            f"{prefix}_errors_total",
            "Requests to a repository's storage that failed, by backend and operation (an"
            " object not found, or found there already, is an answer, not a failure).",
            labels,
            registry=registry,
        )
        self.bytes = Counter(
            f"{prefix}_bytes_total",
            "Bytes read from or written to a repository's storage, by operation.",
            labels,
            registry=registry,
        )
        self.seconds = Histogram(
            f"{prefix}_request_seconds",
            "Time each request to a repository's storage took, by backend and operation (a"
            " local commit is the fsync of the file and its directory).",
            labels,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        )
        self._backend_requests = _BackendRequests(f"{prefix}_backend_requests")
        registry.register(self._backend_requests)

    def count_backend_requests(
        self, repository: str, requests: Callable[[], Mapping[str, int]]
    ) -> None:
        """Export ``requests()``, what the backend of ``repository`` counts it sent (by
        its own call names), as ``..._storage_backend_requests_total``."""
        self._backend_requests.sources[repository] = requests


class _BackendRequests(Collector):
    """Requests backends counted themselves, read from their counters at each scrape."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.sources: dict[str, Callable[[], Mapping[str, int]]] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            self._name,
            "Requests a repository's backend sent (an S3 store's HTTP requests, retries"
            " included: what the store bills), by the backend's call.",
            labels=["repository", "call"],
        )
        for repository, requests in sorted(self.sources.items()):
            for call, count in sorted(requests().items()):
                family.add_metric([repository, call], count)
        yield family


class MeteredStorage(StorageView):
    """``base``, the storage of repository ``repository``, with each request counted and
    timed in ``metrics``."""

    def __init__(
        self, base: Storage, metrics: StorageMetrics, repository: str, backend: str
    ) -> None:
        super().__init__(base)
        self._requests = _Family(metrics.requests, repository, backend)
        self._errors = _Family(metrics.errors, repository, backend)
        self.bytes = _Family(metrics.bytes, repository, backend)
        self._seconds = _Family(metrics.seconds, repository, backend)

    def get(self, name: str) -> bytes:
        with self._request("get"):
            data = self.base.get(name)
        self.bytes.labels("get").inc(len(data))
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        with self._request("get_range"):
            data = self.base.get_range(name, offset, length)
        self.bytes.labels("get_range").inc(len(data))
        return data

    def stat(self, name: str) -> ObjectInfo:
        return self._call("stat", self.base.stat, name)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return self._call("list", self.base.list_objects, prefix)

    def put(self, name: str, data: Parts) -> None:
        self._call("put", self.base.put, name, data)
        self.bytes.labels("put").inc(_length(data))

    def put_new(self, name: str, data: Parts) -> None:
        self._call("put_new", self.base.put_new, name, data)
        self.bytes.labels("put_new").inc(_length(data))

    def writer(self, name: str) -> ObjectWriter:
        return _MeteredWriter(self.base.writer(name), self)

    def touch(self, name: str) -> None:
        self._call("touch", self.base.touch, name)

    def delete(self, *names: str) -> None:
        with self._request("delete"):
            self.base.delete(*names)

    def _call(self, operation: str, method: Callable[..., T], *args: object) -> T:
        with self._request(operation):
            return method(*args)

    @contextmanager
    def _request(self, operation: str) -> Iterator[None]:
        self._requests.labels(operation).inc()
        start = time.perf_counter()
        try:
            yield
        except (ObjectNotFound, ObjectExists):
            raise  # an answer (no such object; it is there already), not a failure
        except BaseException:
            self._errors.labels(operation).inc()
            raise
        finally:
            self._seconds.labels(operation).observe(time.perf_counter() - start)


class _MeteredWriter:
    def __init__(self, base: ObjectWriter, storage: MeteredStorage) -> None:
        self._base = base
        self._storage = storage

    @property
    def name(self) -> str:
        return self._base.name

    @property
    def size(self) -> int:
        return self._base.size

    def write(self, parts: Sequence[Data]) -> None:
        with self._storage._request("write"):
            self._base.write(parts)
        self._storage.bytes.labels("write").inc(sum(len(part) for part in parts))

    def commit(self) -> None:
        with self._storage._request("commit"):
            self._base.commit()

    def abort(self) -> None:
        self._base.abort()


class _Family:
    """One repository's children of a metric family, every operation's made at once."""

    def __init__(self, family: Counter | Histogram, repository: str, backend: str) -> None:
        self._children = {
            operation: family.labels(repository, backend, operation) for operation in OPERATIONS
        }

    def labels(self, operation: str) -> Any:
        return self._children[operation]


def _length(data: Parts) -> int:
    return sum(len(part) for part in parts_of(data))
