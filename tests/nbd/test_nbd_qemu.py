"""NbdDisk against a real ``qemu-nbd`` exporting a qcow2 image with a dirty bitmap.

Needs qemu-img, qemu-io and qemu-nbd (Debian's qemu-utils), and nbdinfo (libnbd-bin) to
cross-check the maps; without them a test is skipped (under CI, failed).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockferry.core.errors import SourceError
from blockferry.source_mover.nbd import AllocationExtent, DirtyExtent, NbdDisk
from tests.system import need_commands

pytestmark = pytest.mark.nbd

KiB = 1024
MiB = 1024 * KiB
SIZE = 16 * MiB
TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_qemu_nbd(image: Path, *listen: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "qemu-nbd",
            "-r",
            "-t",
            *listen,
            "-f",
            "qcow2",
            "-x",
            "disk",
            "-A",
            "-B",
            "bm0",
            str(image),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_connectable(proc: subprocess.Popen[bytes], family: int, address: object) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise RuntimeError(f"qemu-nbd exited {proc.returncode}: {proc.stderr.read()!r}")
        try:
            with socket.socket(family) as s:
                s.connect(address)  # type: ignore[arg-type]
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class Export:
    unix_uri: str
    tcp_uri: str
    raw: bytes
    sock: Path


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Export]:
    need_commands("qemu-utils", *TOOLS)
    work = tmp_path_factory.mktemp("nbd")
    image = work / "disk.qcow2"
    _run("qemu-img", "create", "-f", "qcow2", str(image), "16M")
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", str(image))
    _run("qemu-img", "bitmap", "--add", str(image), "bm0")
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 4M 4k", str(image))
    _run("qemu-img", "convert", "-O", "raw", str(image), str(work / "disk.raw"))
    raw = (work / "disk.raw").read_bytes()

    sock = work / "disk.sock"
    port = _free_port()
    unix = _start_qemu_nbd(image, "-k", str(sock))
    tcp = _start_qemu_nbd(image, "-b", "127.0.0.1", "-p", str(port))
    try:
        _wait_connectable(unix, socket.AF_UNIX, str(sock))
        _wait_connectable(tcp, socket.AF_INET, ("127.0.0.1", port))
        yield Export(
            unix_uri=f"nbd+unix:///disk?socket={sock}",
            tcp_uri=f"nbd://127.0.0.1:{port}/disk",
            raw=raw,
            sock=sock,
        )
    finally:
        _stop(unix)
        _stop(tcp)


async def test_size_and_contexts(export: Export) -> None:
    async with await NbdDisk.open(export.unix_uri, "bm0") as disk:
        assert disk.size == SIZE
        assert disk.structured_replies
        assert set(disk.contexts) == {"base:allocation", "qemu:dirty-bitmap:bm0"}


async def test_read_matches_qemu_img_convert(export: Export) -> None:
    raw = export.raw
    assert raw[1 * MiB : 1 * MiB + 64 * KiB] == b"\xab" * (64 * KiB)
    assert raw[4 * MiB : 4 * MiB + 4 * KiB] == b"\xcd" * (4 * KiB)
    async with await NbdDisk.open(export.unix_uri) as disk:
        assert await disk.read(0, SIZE) == raw
        assert await disk.read(1 * MiB - 10, 20) == raw[1 * MiB - 10 : 1 * MiB + 10]
        assert await disk.read(4 * MiB + 4095, 2) == b"\xcd\x00"
        assert await disk.read(SIZE - 1, 1) == b"\x00"
        assert await disk.read(5, 0) == b""


async def test_reads_are_split_and_pipelined(export: Export) -> None:
    async with await NbdDisk.open(export.unix_uri, max_read=256 * KiB) as disk:
        assert await disk.read(0, SIZE) == export.raw  # 64 requests in flight at once
        spans = [(i * 300 * KiB + 7, 513 * KiB) for i in range(40)]
        results = await asyncio.gather(*(disk.read(o, n) for o, n in spans))
        for (o, n), data in zip(spans, results, strict=True):
            assert data == export.raw[o : o + n]


async def test_simple_replies(export: Export) -> None:
    async with await NbdDisk.open(export.unix_uri, structured_replies=False) as disk:
        assert not disk.structured_replies
        assert await disk.read(0, SIZE) == export.raw
        # without metadata contexts everything counts as data
        assert await disk.allocation(0, SIZE) == [AllocationExtent(0, SIZE, False, False)]
        with pytest.raises(SourceError, match="no dirty bitmap was opened"):
            await disk.dirty(0, SIZE)


async def test_allocation(export: Export) -> None:
    async with await NbdDisk.open(export.unix_uri) as disk:
        extents = await disk.allocation(0, SIZE)
        # contiguous, covering exactly the disk
        assert extents[0].offset == 0 and extents[-1].end == SIZE
        assert all(a.end == b.offset for a, b in itertools.pairwise(extents))
        # written data is never reported as zero; only the written clusters are data
        # (whether the rest of the cluster at 4 MiB reads as "zero" depends on the host
        # file system, so allow either)
        data = [(e.offset, e.length) for e in extents if not e.zero]
        assert data[0] == (1 * MiB, 64 * KiB)
        assert data[1][0] == 4 * MiB and 4 * KiB <= data[1][1] <= 64 * KiB
        assert len(data) == 2
        assert all(not e.hole for e in extents if e.offset in (1 * MiB, 4 * MiB))
        for e in extents:
            if e.zero:
                assert export.raw[e.offset : e.end].count(0) == e.length
        assert AllocationExtent(0, 1 * MiB, zero=True, hole=True) in extents
        assert extents[-1] == AllocationExtent(
            4 * MiB + 64 * KiB, SIZE - 4 * MiB - 64 * KiB, True, True
        )
        # a sub-range is clipped to what was asked
        assert await disk.allocation(1 * MiB + 10, 100) == [
            AllocationExtent(1 * MiB + 10, 100, zero=False, hole=False)
        ]


async def test_dirty_bitmap(export: Export) -> None:
    async with await NbdDisk.open(export.unix_uri, "bm0") as disk:
        # the 4 KiB write after the bitmap was added, at its 64 KiB granularity; the
        # write at 1 MiB came before the bitmap and is not dirty
        assert await disk.dirty(0, SIZE) == [
            DirtyExtent(0, 4 * MiB, dirty=False),
            DirtyExtent(4 * MiB, 64 * KiB, dirty=True),
            DirtyExtent(4 * MiB + 64 * KiB, SIZE - 4 * MiB - 64 * KiB, dirty=False),
        ]
        assert await disk.dirty(4 * MiB + 100, 200) == [DirtyExtent(4 * MiB + 100, 200, True)]
        # both maps at once from several tasks
        alloc, dirty = await asyncio.gather(disk.allocation(0, SIZE), disk.dirty(0, SIZE))
        assert alloc[-1].end == dirty[-1].end == SIZE


async def test_maps_agree_with_nbdinfo(export: Export) -> None:
    need_commands("libnbd-bin", "nbdinfo")

    def nbdinfo(context: str) -> list[tuple[int, int, int]]:
        out = subprocess.run(
            ["nbdinfo", f"--map={context}", export.unix_uri],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return [
            (int(f[0]), int(f[1]), int(f[2])) for f in (line.split() for line in out.splitlines())
        ]

    async with await NbdDisk.open(export.unix_uri, "bm0") as disk:
        dirty = [(e.offset, e.length, int(e.dirty)) for e in await disk.dirty(0, SIZE)]
        alloc = [
            (e.offset, e.length, int(e.hole) | int(e.zero) << 1)
            for e in await disk.allocation(0, SIZE)
        ]
    assert dirty == nbdinfo("qemu:dirty-bitmap:bm0")
    assert alloc == nbdinfo("base:allocation")


async def test_tcp_export(export: Export) -> None:
    async with await NbdDisk.open(export.tcp_uri, "bm0") as disk:
        assert disk.size == SIZE
        assert await disk.read(0, SIZE) == export.raw
        assert [e for e in await disk.dirty(0, SIZE) if e.dirty] == [
            DirtyExtent(4 * MiB, 64 * KiB, dirty=True)
        ]


async def test_unknown_export_is_named(export: Export) -> None:
    uri = f"nbd+unix:///nosuch?socket={export.sock}"
    with pytest.raises(SourceError, match=r"opening nbd\+unix:///nosuch\?socket=.*'nosuch'") as err:
        await NbdDisk.open(uri)
    assert "NBD_REP_ERR_UNKNOWN" in str(err.value)


async def test_unknown_bitmap(export: Export) -> None:
    with pytest.raises(SourceError, match="no dirty bitmap 'bm9'"):
        await NbdDisk.open(export.unix_uri, "bm9")


async def test_missing_socket(tmp_path: Path) -> None:
    uri = f"nbd+unix:///disk?socket={tmp_path / 'none.sock'}"
    with pytest.raises(SourceError, match=r"connecting to nbd\+unix:///disk\?socket=.*none\.sock"):
        await NbdDisk.open(uri)


async def test_connection_refused() -> None:
    uri = f"nbd://127.0.0.1:{_free_port()}/disk"
    with pytest.raises(SourceError, match=f"connecting to {uri}: .*"):
        await NbdDisk.open(uri)


async def test_range_checks_and_closed(export: Export) -> None:
    disk = await NbdDisk.open(export.unix_uri)
    with pytest.raises(SourceError, match=f"reading 2 bytes at {SIZE - 1} from .*outside the disk"):
        await disk.read(SIZE - 1, 2)
    with pytest.raises(SourceError, match="outside the disk"):
        await disk.allocation(-1, 2)
    await disk.close()
    await disk.close()  # idempotent
    with pytest.raises(SourceError, match=r"reading 1 bytes at 0 from .*: the disk is closed"):
        await disk.read(0, 1)
