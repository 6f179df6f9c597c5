"""The SMB backend against a real Samba server (tests/samba.py): the storage contract as
SMB keeps it (temporaries renamed or hard-linked into place, put-if-absent across
connections, the server's clock), leftovers of dead writers, a full share, and the
errors an operator reads: each names the smb:// URL, none the password."""

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
from datetime import timedelta

import pytest
import smbclient
from smbprotocol.exceptions import NotSupported
from smbprotocol.file_info import FileLinkInformation

from blockferry.core.errors import RepositoryError, RepositoryFull, RepositoryUnavailable
from blockferry.repository import smb_storage
from blockferry.repository.smb_storage import SmbLocation, SmbStorage
from blockferry.repository.storage import ObjectExists, ObjectInfo, ObjectNotFound
from tests.samba import SambaServer
from tests.system import free_port, small_tmpfs


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}/"


@pytest.fixture
def storage(samba: SambaServer, prefix: str) -> Iterator[SmbStorage]:
    store = samba.storage(prefix)
    yield store
    store.close()


def names(storage: SmbStorage, prefix: str = "") -> list[str]:
    return sorted(info.name for info in storage.list_objects(prefix))


def files_on_server(samba: SambaServer, prefix: str) -> list[str]:
    """Every file under ``prefix`` as the server's file system holds it."""
    root = samba.share_dir / prefix
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def make_old(storage: SmbStorage, name: str, age: timedelta) -> None:
    """Set ``name``'s times to ``age`` before the server's clock, through SMB."""
    then = (storage.server_now() - age).timestamp()
    path = storage._unc(storage.location.prefix + name)  # a temporary's name too
    smbclient.utime(path, times=(then, then), **storage._session())


def test_objects_are_files_in_the_share(
    storage: SmbStorage, samba: SambaServer, prefix: str
) -> None:
    storage.put("a/b/one", b"first")
    storage.put("a/two", [b"sec", memoryview(b"o"), bytearray(b"nd")])
    storage.put("empty", b"")
    assert storage.get("a/b/one") == b"first"
    assert storage.get("a/two") == b"second"
    assert storage.get("empty") == b""
    assert storage.stat("a/two").size == 6
    assert files_on_server(samba, prefix) == ["a/b/one", "a/two", "empty"]
    assert (samba.share_dir / prefix / "a/two").read_bytes() == b"second"
    assert storage.where("a/two") == (
        f"smb://{samba.user}@127.0.0.1:{samba.port}/{samba.share}/{prefix}a/two"
    )


def test_a_large_object_is_written_and_read_in_many_requests(storage: SmbStorage) -> None:
    data = os.urandom(9 << 20)  # more than one SMB2 WRITE or READ may carry
    storage.put("packs/ab/big", data)
    assert storage.get("packs/ab/big") == data
    assert storage.get_range("packs/ab/big", (8 << 20) - 5, 10) == data[(8 << 20) - 5 :][:10]


def race_put_new(stores: list[SmbStorage], name: str, creators: int = 8) -> list[str]:
    """``creators`` threads putting ``name`` at once, spread over ``stores``."""
    results: list[str] = []
    start = threading.Barrier(creators)

    def create(i: int) -> None:
        store = stores[i % len(stores)]
        start.wait()
        try:
            store.put_new(name, bytes([i]) * 1000)
            results.append("won")
        except ObjectExists:
            results.append("lost")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(creators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


@pytest.mark.parametrize("connections", [1, 8])
def test_put_new_races_have_one_winner(samba: SambaServer, prefix: str, connections: int) -> None:
    """Eight creators, through one connection or through eight (eight smbd processes)."""
    stores = [samba.storage(prefix) for _ in range(connections)]
    try:
        for round_ in range(5):
            name = f"locks/contested-{round_}"
            assert race_put_new(stores, name) == ["lost"] * 7 + ["won"]
            assert len(set(stores[0].get(name))) == 1
        assert stores[0].leftovers() == []
    finally:
        for store in stores:
            store.close()


def test_without_hard_links_put_new_renames_if_absent(
    storage: SmbStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share whose file system has no hard links answers STATUS_NOT_SUPPORTED."""
    set_info = smb_storage._set_info

    def no_links(handle: object, info: object) -> None:
        if isinstance(info, FileLinkInformation):
            raise NotSupported()
        set_info(handle, info)

    monkeypatch.setattr(smb_storage, "_set_info", no_links)
    storage.put_new("a", b"first")
    with pytest.raises(ObjectExists):
        storage.put_new("a", b"second")
    writer = storage.writer("b")
    writer.write([b"pack"])
    writer.commit()
    assert storage.get("a") == b"first" and storage.get("b") == b"pack"
    assert storage.leftovers() == []


def test_listing_by_prefix_skips_temporaries_and_hidden_files(
    storage: SmbStorage, samba: SambaServer, prefix: str
) -> None:
    for name in ("packs/ab/1", "packs/cd/2", "index/1", "config"):
        storage.put(name, b"x")
    (samba.share_dir / prefix / ".hidden").write_bytes(b"not an object")
    writer = storage.writer("packs/ab/3")
    writer.write([b"y"])
    assert names(storage) == ["config", "index/1", "packs/ab/1", "packs/cd/2"]
    assert names(storage, "packs/") == ["packs/ab/1", "packs/cd/2"]
    assert names(storage, "packs/ab/") == ["packs/ab/1"]
    assert names(storage, "nothing/") == []
    info = storage.list_objects("index/")[0]
    assert info == storage.stat("index/1"), "listing and stat agree, to the microsecond"
    [leftover] = storage.leftovers()
    assert leftover.name.startswith("packs/ab/.3.tmp-") and leftover.size == 1
    writer.abort()


def test_writer_publishes_whole_at_commit(
    storage: SmbStorage, samba: SambaServer, prefix: str
) -> None:
    writer = storage.writer("packs/ab/p")
    writer.write([b"head", b"er"])
    writer.write([b"body"])
    assert writer.size == 10
    assert names(storage) == []
    [temporary] = files_on_server(samba, prefix)
    assert temporary.startswith("packs/ab/.p.tmp-")
    writer.commit()
    assert storage.get("packs/ab/p") == b"headerbody"
    assert files_on_server(samba, prefix) == ["packs/ab/p"]
    writer.abort()  # after a commit: nothing happens
    assert storage.get("packs/ab/p") == b"headerbody"


def test_a_put_replaces_an_object_being_read(storage: SmbStorage) -> None:
    """Samba refuses to rename over a file open through the same connection: the put
    retries until the reader closes it."""
    storage.put("snapshot", b"0" * 4096)
    stop = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                assert len(storage.get("snapshot")) == 4096
            except BaseException as exc:
                failures.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(10):
            storage.put("snapshot", str(i).encode() * 4096)
    finally:
        stop.set()
        reader.join()
    assert failures == []
    assert storage.get("snapshot") == b"9" * 4096


def test_touch_moves_the_time_by_the_servers_clock(storage: SmbStorage) -> None:
    storage.put("lock", b"{}")
    storage.put("empty", b"")
    make_old(storage, "lock", timedelta(minutes=10))
    make_old(storage, "empty", timedelta(minutes=10))
    for name, data in (("lock", b"{}"), ("empty", b"")):
        before = storage.stat(name).modified
        storage.touch(name)
        after = storage.stat(name).modified
        assert after - before > timedelta(minutes=9)
        assert abs(storage.server_now() - after) < timedelta(seconds=5)
        assert storage.get(name) == data


def test_touch_never_creates(storage: SmbStorage) -> None:
    with pytest.raises(ObjectNotFound, match=r"touching smb://.*/nope: no such object"):
        storage.touch("nope")
    assert names(storage) == []


def test_remove_leftovers_goes_by_age_on_the_servers_clock(storage: SmbStorage) -> None:
    for name in ("packs/ab/young", "packs/ab/old", "index/older"):
        writer = storage.writer(name)
        writer.write([b"partial"])
        writer._handle.close()  # type: ignore[union-attr]  # as if its process died
    assert len(storage.leftovers()) == 3
    assert storage.remove_leftovers() == 0, "younger than an hour"
    by_name = {info.name.split("/.")[-1].split(".tmp-")[0]: info for info in storage.leftovers()}
    make_old(storage, by_name["old"].name, timedelta(minutes=61))
    make_old(storage, by_name["older"].name, timedelta(hours=5))
    assert storage.remove_leftovers(min_age=3 * 3600) == 1, "min_age raises the age"
    assert storage.remove_leftovers() == 1
    assert [info.name for info in storage.leftovers()] == [by_name["young"].name]
    assert names(storage) == []


def test_a_live_writers_temporary_is_never_reaped(storage: SmbStorage) -> None:
    writer = storage.writer("packs/ab/live")
    writer.write([b"x"])
    [temporary] = storage.leftovers()
    make_old(storage, temporary.name, timedelta(hours=2))
    assert storage.remove_leftovers() == 0, "its writer holds it open"
    writer.write([b"y"])
    writer.commit()
    assert storage.get("packs/ab/live") == b"xy"


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from blockferry.repository.smb_storage import SmbLocation, SmbStorage
    host, port, share, prefix, user = sys.argv[1:]
    location = SmbLocation(host, int(port), share, prefix, user)
    storage = SmbStorage(location, password=os.environ["SMB_TEST_PASSWORD"])
    writer = storage.writer("packs/ab/killed")
    writer.write([b"partial"])
    print("written", flush=True)
    sys.stdin.read()
    """
)


def test_a_killed_writers_temporary_is_reaped(
    storage: SmbStorage, samba: SambaServer, prefix: str
) -> None:
    location = [samba.host, str(samba.port), samba.share, prefix, samba.user]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, *location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "SMB_TEST_PASSWORD": samba.password,
        },
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"written\n"
    [temporary] = storage.leftovers()
    make_old(storage, temporary.name, timedelta(hours=2))
    assert storage.remove_leftovers() == 0, "its writer is alive"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while True:  # until smbd has closed the dead connection's handle, which stamps a time
        make_old(storage, temporary.name, timedelta(hours=2))
        if storage.remove_leftovers() == 1:
            break
        assert time.monotonic() < deadline, "the dead writer's temporary is still held"
        time.sleep(0.05)
    assert storage.leftovers() == [] and names(storage) == []


def test_a_full_share(samba: SambaServer, prefix: str) -> None:
    with small_tmpfs(samba.share_dir / prefix.rstrip("/"), "1m"):
        storage = samba.storage(prefix)
        try:
            storage.put("kept", b"committed")
            with pytest.raises(RepositoryFull, match=r"smb://.*/big: no space left on the share"):
                storage.put("big", os.urandom(2 << 20))
            writer = storage.writer("packs/ab/big")
            with pytest.raises(RepositoryFull, match="STATUS_DISK_FULL"):
                for _ in range(40):
                    writer.write([os.urandom(64 << 10)])
            assert storage.leftovers() == [], "no temporary is left behind"
            assert names(storage) == ["kept"] and storage.get("kept") == b"committed"
            storage.put("small", b"fits again")
        finally:
            storage.close()


def test_the_session_is_encrypted(storage: SmbStorage) -> None:
    storage.put("x", b"secret")
    [connection] = storage._connections.values()
    [session] = connection.session_table.values()
    assert session.encrypt_data and connection.dialect >= 0x300


def test_a_dropped_connection_is_made_again(storage: SmbStorage) -> None:
    storage.put("x", b"1")
    for connection in list(storage._connections.values()):
        connection.transport.close()  # as the network or a restarted server would
    assert storage.get("x") == b"1"
    storage.close()
    assert storage.get("x") == b"1", "closed: still usable"


def test_errors_name_the_object_and_never_the_password(
    storage: SmbStorage, samba: SambaServer
) -> None:
    errors: list[RepositoryError] = []
    for call in (
        lambda: storage.get("packs/ab/nope"),
        lambda: storage.stat("nope"),
        lambda: storage.get_range("nope", 0, 1),
        lambda: storage.touch("nope"),
    ):
        with pytest.raises(ObjectNotFound) as caught:
            call()
        errors.append(caught.value)
    assert "smb://" in str(errors[0]) and str(errors[0]).endswith("packs/ab/nope: no such object")
    for error in errors:
        assert samba.password not in str(error)
    assert samba.password not in repr(storage) and repr(storage).startswith("SmbStorage('smb://")


def test_a_wrong_password_is_a_clear_error(samba: SambaServer, prefix: str) -> None:
    wrong = SmbStorage(samba.location(prefix), password="not-" + samba.password)
    try:
        with pytest.raises(RepositoryError) as caught:
            wrong.get("config")
    finally:
        wrong.close()
    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFound | RepositoryUnavailable)
    assert f"smb://{samba.user}@127.0.0.1:{samba.port}/{samba.share}/{prefix}config" in message
    assert "refused the login" in message and "wrong user or password" in message
    assert samba.password not in message


def test_a_share_that_does_not_exist(samba: SambaServer) -> None:
    location = SmbLocation(samba.host, samba.port, "nosuchshare", "", samba.user)
    storage = SmbStorage(location, password=samba.password)
    try:
        with pytest.raises(RepositoryError, match="the server has no share 'nosuchshare'"):
            storage.put("x", b"x")
    finally:
        storage.close()


def test_an_unreachable_server(samba: SambaServer) -> None:
    location = SmbLocation("127.0.0.1", free_port(), samba.share, "", samba.user)
    storage = SmbStorage(location, password=samba.password, connect_timeout=2)
    with pytest.raises(RepositoryUnavailable, match=r"reading smb://.*/x: the server cannot be"):
        storage.get("x")
    with pytest.raises(RepositoryUnavailable):
        storage.list_objects("")


def test_invalid_names_and_locations_are_refused(storage: SmbStorage) -> None:
    for name in ("", "/abs", "a/../b", ".hidden", "a/.tmp", "a//b", "a\\b"):
        with pytest.raises(RepositoryError, match="invalid object name"):
            storage.put(name, b"x")
    for prefix in ("no-slash", "/abs/", "a//"):
        with pytest.raises(RepositoryError, match="a path inside the share"):
            SmbLocation("h", 445, "s", prefix, "u")


def test_server_now_is_the_time_of_a_fresh_write(storage: SmbStorage) -> None:
    storage.put("x", b"x")
    written = storage.stat("x").modified
    now = storage.server_now()
    assert timedelta(0) <= now - written < timedelta(seconds=5)
    assert storage.leftovers() == [], "the probe is gone"
    assert isinstance(storage.list_objects("")[0], ObjectInfo)


def test_a_storage_on_the_share_root(samba: SambaServer) -> None:
    storage = samba.storage("")
    name = f"root-{secrets.token_hex(4)}"
    try:
        storage.put(name, b"at the root")
        assert storage.get(name) == b"at the root"
        assert name in names(storage)
        assert storage.where(name).endswith(f"/{samba.share}/{name}")
    finally:
        storage.delete(name)
        storage.close()
