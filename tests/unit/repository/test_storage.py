"""The storage contract (repository/storage.py), run against every backend, and the
read-only and metered views over it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blockferry.core.errors import RepositoryError, RepositoryFull
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.s3_storage import S3Storage
from blockferry.repository.smb_storage import SmbStorage
from blockferry.repository.storage import (
    ObjectExists,
    ObjectNotFound,
    Storage,
    StorageReadOnly,
)
from blockferry.repository.storage_views import MeteredStorage, ReadOnlyStorage, StorageMetrics
from tests.minio import MinioServer
from tests.samba import SambaServer
from tests.system import small_tmpfs


@pytest.fixture(params=["local", "s3", "smb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store: Storage
    if request.param == "local":
        store = LocalStorage(tmp_path / "store")
    elif request.param == "s3":
        minio: MinioServer = request.getfixturevalue("minio")
        store = minio.storage(minio.new_bucket())
    else:
        samba: SambaServer = request.getfixturevalue("samba")
        store = samba.storage(f"t{secrets.token_hex(4)}/")
    yield store
    store.close()


def names(storage: Storage, prefix: str = "") -> list[str]:
    return sorted(info.name for info in storage.list_objects(prefix))


def test_put_get_and_parts(storage: Storage) -> None:
    storage.put("a/b/one", b"first")
    storage.put("a/two", [b"sec", memoryview(b"o"), bytearray(b"nd")])
    assert storage.get("a/b/one") == b"first"
    assert storage.get("a/two") == b"second"
    assert storage.stat("a/two").size == 6


def test_put_replaces_and_put_new_does_not(storage: Storage) -> None:
    storage.put("x", b"old")
    storage.put("x", b"new")
    assert storage.get("x") == b"new"
    with pytest.raises(ObjectExists, match="exists already"):
        storage.put_new("x", b"other")
    assert storage.get("x") == b"new"
    storage.put_new("y", b"y")
    assert storage.get("y") == b"y"
    assert storage.leftovers() == []


def test_put_new_races_have_one_winner(storage: Storage) -> None:
    results: list[str] = []

    def create(value: bytes) -> None:
        try:
            storage.put_new("contested", value)
            results.append("won")
        except ObjectExists:
            results.append("lost")

    threads = [threading.Thread(target=create, args=(bytes([i]) * 100,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    assert len(set(storage.get("contested"))) == 1


def test_missing_objects(storage: Storage) -> None:
    for read in (
        lambda: storage.get("nope"),
        lambda: storage.stat("nope"),
        lambda: storage.get_range("nope", 0, 1),
        lambda: storage.touch("nope"),
    ):
        with pytest.raises(ObjectNotFound, match="nope"):
            read()
    assert names(storage) == [], "touch does not create"
    storage.delete("nope", "dir/nope")  # absent ones are fine


def test_get_range(storage: Storage) -> None:
    storage.put("r", bytes(range(100)))
    assert storage.get_range("r", 10, 5) == bytes(range(10, 15))
    assert storage.get_range("r", 95, 10) == bytes(range(95, 100)), "short at the end"
    assert storage.get_range("r", 200, 10) == b""


def test_list_objects_by_prefix(storage: Storage) -> None:
    for name in ("packs/ab/1", "packs/cd/2", "index/1", "config"):
        storage.put(name, b"x")
    writer = storage.writer("packs/ab/3")  # a temporary is never listed
    writer.write([b"y"])
    assert names(storage) == ["config", "index/1", "packs/ab/1", "packs/cd/2"]
    assert names(storage, "packs/") == ["packs/ab/1", "packs/cd/2"]
    assert names(storage, "packs/ab/") == ["packs/ab/1"]
    assert names(storage, "nothing/") == []
    writer.abort()


def test_invalid_names_are_refused(storage: Storage) -> None:
    for name in ("", "/abs", "a/../b", ".hidden", "a/.tmp", "a//b"):
        with pytest.raises(Exception, match="invalid object name"):
            storage.put(name, b"x")


def test_writer_publishes_whole_at_commit(storage: Storage) -> None:
    writer = storage.writer("packs/ab/p")
    writer.write([b"head", b"er"])
    writer.write([b"body"])
    assert writer.size == 10
    assert names(storage) == [], "nothing is visible before the commit"
    if isinstance(storage, LocalStorage | SmbStorage):  # S3 buffers a part in memory
        assert len(storage.leftovers()) == 1
    writer.commit()
    assert storage.get("packs/ab/p") == b"headerbody"
    assert storage.leftovers() == []
    writer.abort()  # after a commit: nothing happens
    assert storage.get("packs/ab/p") == b"headerbody"


def test_writer_commit_never_replaces(storage: Storage) -> None:
    storage.put("p", b"committed")
    writer = storage.writer("p")
    writer.write([b"another"])
    with pytest.raises(ObjectExists):
        writer.commit()
    assert storage.get("p") == b"committed"
    assert storage.leftovers() == []


def test_writer_abort_leaves_nothing(storage: Storage) -> None:
    writer = storage.writer("a/p")
    writer.write([b"x" * 1000])
    writer.abort()
    writer.abort()
    assert names(storage) == [] and storage.leftovers() == []
    with pytest.raises(Exception, match="committed or aborted"):
        writer.write([b"y"])


def test_touch_moves_the_modification_time(storage: Storage) -> None:
    storage.put("lock", b"x")
    before = storage.stat("lock").modified
    time.sleep(1.05 if isinstance(storage, S3Storage) else 0.02)  # S3's times: to the second
    storage.touch("lock")
    assert storage.stat("lock").modified > before
    assert storage.get("lock") == b"x"


def test_delete_in_order(storage: Storage) -> None:
    for name in ("index/1", "packs/ab/1", "packs/ab/2"):
        storage.put(name, b"x")
    storage.delete("index/1", "packs/ab/1")
    assert names(storage) == ["packs/ab/2"]
    storage.delete("packs/ab/2")
    assert names(storage) == []
    storage.put("packs/ab/3", b"again")  # a directory emptied by a delete is made again
    assert storage.get("packs/ab/3") == b"again"


def test_a_live_writers_temporary_is_never_reaped(storage: Storage) -> None:
    writer = storage.writer("packs/ab/live")
    writer.write([b"x"])
    assert storage.remove_leftovers() == 0
    writer.commit()
    assert storage.get("packs/ab/live") == b"x"


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from blockferry.repository.local_storage import LocalStorage
    storage = LocalStorage(Path(sys.argv[1]))
    writer = storage.writer("packs/ab/killed")
    writer.write([b"partial"])
    print("written", flush=True)
    sys.stdin.read()
    """
)


def test_a_killed_writers_temporary_is_reaped(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(storage.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"written\n"
    assert storage.remove_leftovers() == 0, "its writer is alive"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(storage.leftovers()) == 1
    assert storage.remove_leftovers(min_age=3600) == 0, "younger than min_age"
    assert storage.remove_leftovers() == 1
    assert storage.leftovers() == [] and names(storage) == []


def test_full_file_system(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as mount_point:
        storage = LocalStorage(mount_point / "store")
        storage.put("kept", b"committed")
        with pytest.raises(RepositoryFull, match="no space left"):
            storage.put("big", os.urandom(2 << 20))
        writer = storage.writer("packs/ab/big")
        with pytest.raises(RepositoryFull):
            for _ in range(40):
                writer.write([os.urandom(64 << 10)])
        assert storage.leftovers() == [], "no temporary is left behind"
        assert names(storage) == ["kept"] and storage.get("kept") == b"committed"
        storage.put("small", b"fits again")


def test_read_only_view_refuses_every_write(storage: Storage) -> None:
    storage.put("kept", b"x")
    view = ReadOnlyStorage(storage)
    assert view.get("kept") == b"x" and names(view) == ["kept"]
    for write in (
        lambda: view.put("kept", b"y"),
        lambda: view.put_new("new", b"y"),
        lambda: view.writer("new"),
        lambda: view.touch("kept"),
        lambda: view.delete("kept"),
        lambda: view.remove_leftovers(),
    ):
        with pytest.raises(StorageReadOnly, match="read-only"):
            write()
    assert names(storage) == ["kept"] and storage.get("kept") == b"x"


def test_metered_view_counts_requests_bytes_and_errors(storage: Storage) -> None:
    registry = CollectorRegistry()
    view = MeteredStorage(storage, StorageMetrics(registry, "target-mover"), "main", "file")

    def sample(metric: str, operation: str) -> float:
        labels = {"repository": "main", "backend": "file", "operation": operation}
        value = registry.get_sample_value(metric.replace("repository", "target_mover"), labels)
        assert value is not None
        return value

    view.put("a", b"12345")
    assert view.get("a") == b"12345"
    assert view.get_range("a", 1, 2) == b"23"
    writer = view.writer("b")
    writer.write([b"abc", b"de"])
    writer.commit()
    with pytest.raises(ObjectNotFound):
        view.get("missing")
    assert sample("blockferry_repository_storage_errors_total", "get") == 0, "an answer"
    with pytest.raises(RepositoryError):
        view.get("../outside")
    assert sample("blockferry_repository_storage_requests_total", "put") == 1
    assert sample("blockferry_repository_storage_bytes_total", "put") == 5
    assert sample("blockferry_repository_storage_requests_total", "get") == 3
    assert sample("blockferry_repository_storage_errors_total", "get") == 1
    assert sample("blockferry_repository_storage_bytes_total", "get") == 5
    assert sample("blockferry_repository_storage_bytes_total", "get_range") == 2
    assert sample("blockferry_repository_storage_bytes_total", "write") == 5
    assert sample("blockferry_repository_storage_requests_total", "commit") == 1
    assert sample("blockferry_repository_storage_request_seconds_count", "get") == 3
    assert sample("blockferry_repository_storage_errors_total", "delete") == 0


def test_descriptors_in_use_are_not_closed_by_eviction(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store", open_limit=1)
    storage.put("a", b"A" * 8)
    storage.put("b", b"B" * 8)
    files = storage._open
    with files.borrow(storage.path("a")) as fd_a:
        with files.borrow(storage.path("b")) as fd_b:
            assert os.pread(fd_a, 8, 0) == b"A" * 8 and os.pread(fd_b, 8, 0) == b"B" * 8
        assert os.pread(fd_a, 8, 0) == b"A" * 8, "evicted, but in use: still open"
    storage.close()
    with pytest.raises(OSError):
        os.fstat(fd_a)


def test_a_replaced_object_is_read_anew(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    storage.put("snapshot", b"old")
    assert storage.get_range("snapshot", 0, 3) == b"old"
    storage.put("snapshot", b"new")
    assert storage.get_range("snapshot", 0, 3) == b"new"


def test_a_shared_directory_reaps_only_temporaries_old_by_its_own_clock(tmp_path: Path) -> None:
    """On a share other hosts mount, another host's live writer holds its temporary
    under a flock this host cannot see: only age, by the share's clock, tells."""
    storage = LocalStorage(tmp_path / "store", shared=True)
    storage.put("kept", b"x")
    young = storage.root / ".pack.tmp-young"  # no flock held here: another host's writer
    old = storage.root / ".pack.tmp-old"
    young.write_bytes(b"partial")
    old.write_bytes(b"partial")
    an_hour_and_more_ago = time.time() - 3700
    os.utime(old, (an_hour_and_more_ago, an_hour_and_more_ago))
    assert storage.remove_leftovers() == 1
    assert young.exists() and not old.exists()
    assert LocalStorage(storage.root).remove_leftovers() == 1, "unshared: flock alone"
    assert names(storage) == ["kept"]
