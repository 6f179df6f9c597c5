"""NBD URI parsing, and NbdDisk against a scripted in-process server (replies qemu-nbd
never sends: errors, short replies, partial block status). Real qemu-nbd: tests/nbd."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from blockferry.core.errors import ConfigError, SourceError
from blockferry.source_mover import nbd
from blockferry.source_mover.nbd import AllocationExtent, NbdDisk, NbdUri, parse_nbd_uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nbd://host/disk", NbdUri("nbd://host/disk", "tcp", "disk", host="host", port=10809)),
        ("nbd://h:1234/", NbdUri("nbd://h:1234/", "tcp", "", host="h", port=1234)),
        ("nbd://h", NbdUri("nbd://h", "tcp", "", host="h")),
        ("nbd://[::1]:5/a%20b", NbdUri("nbd://[::1]:5/a%20b", "tcp", "a b", host="::1", port=5)),
        (
            "nbd+unix:///disk?socket=/run/x.sock",
            NbdUri("nbd+unix:///disk?socket=/run/x.sock", "unix", "disk", socket="/run/x.sock"),
        ),
        ("nbd+unix://?socket=s", NbdUri("nbd+unix://?socket=s", "unix", "", socket="s")),
    ],
)
def test_parse_uri(text: str, expected: NbdUri) -> None:
    assert parse_nbd_uri(text) == expected
    assert str(parse_nbd_uri(text)) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("nbd:///disk", "no host"),
        ("nbd://h:99999/disk", "out of range"),
        ("nbd://h:x/disk", "Port could not be cast"),
        ("nbd://h/disk?socket=/s", "unexpected query"),
        ("nbd+unix:///disk", "socket=PATH"),
        ("nbd+unix:///disk?socket=", "socket=PATH"),
        ("nbd+unix:///disk?socket=a&socket=b", "socket=PATH"),
        ("nbd+unix://host/disk?socket=/s", "take no host"),
        ("nbd+unix:///disk?socket=/s&tls=1", "unexpected query"),
        ("nbds://h/disk", "TLS"),
        ("http://h/disk", "unsupported scheme"),
        ("/dev/sda", "no scheme"),
        ("nbd://u@h/disk", "user information"),
        ("nbd://h/disk#x", "fragment"),
    ],
)
def test_bad_uris_say_why(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        parse_nbd_uri(text)
    assert repr(text) in str(err.value)


# --- a scripted server ---------------------------------------------------------------

SIZE = 1 << 20
Handler = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, int, int, int, int], Awaitable[None]
]


def structured(flags: int, kind: int, cookie: int, payload: bytes) -> bytes:
    return (
        struct.pack(">IHHQI", nbd.STRUCTURED_REPLY_MAGIC, flags, kind, cookie, len(payload))
        + payload
    )


def opt_reply(option: int, reply: int, data: bytes = b"") -> bytes:
    return struct.pack(">QIII", nbd.OPT_REPLY_MAGIC, option, reply, len(data)) + data


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    writer.write(struct.pack(">QQH", nbd.NBDMAGIC, nbd.IHAVEOPT, 3))
    await reader.readexactly(4)
    while True:
        _, option, length = struct.unpack(">QII", await reader.readexactly(16))
        await reader.readexactly(length)
        if option == nbd.OPT_STRUCTURED_REPLY:
            writer.write(opt_reply(option, nbd.REP_ACK))
        elif option == nbd.OPT_SET_META_CONTEXT:
            writer.write(opt_reply(option, nbd.REP_META_CONTEXT, b"\0\0\0\x07base:allocation"))
            writer.write(opt_reply(option, nbd.REP_ACK))
        elif option == nbd.OPT_GO:
            info = struct.pack(">HQH", nbd.INFO_EXPORT, SIZE, 3)
            writer.write(opt_reply(option, nbd.REP_INFO, info))
            writer.write(opt_reply(option, nbd.REP_ACK))
            break
    while True:
        try:
            header = await reader.readexactly(28)
        except asyncio.IncompleteReadError:
            break
        _, _, cmd, cookie, offset, length = struct.unpack(">IHHQQI", header)
        if cmd == nbd.CMD_DISC:
            break
        await handler(reader, writer, cmd, cookie, offset, length)
        await writer.drain()
    writer.close()


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        sock = tmp_path / f"s{len(servers)}.sock"
        servers.append(
            await asyncio.start_unix_server(lambda r, w: serve(r, w, handler), path=str(sock))
        )
        return f"nbd+unix:///x?socket={sock}"

    yield start
    for server in servers:
        server.close()


async def test_error_chunk_names_uri_action_and_cause(
    fake: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(
        r: object, w: asyncio.StreamWriter, cmd: int, cookie: int, o: int, n: int
    ) -> None:
        msg = b"boom"
        w.write(structured(1, nbd.REPLY_TYPE_ERROR, cookie, struct.pack(">IH", 5, len(msg)) + msg))

    uri = await fake(handler)
    async with await NbdDisk.open(uri) as disk:
        with pytest.raises(SourceError) as err:
            await disk.read(4096, 8192)
        assert (
            str(err.value)
            == f"reading 8192 bytes at 4096 from {uri}: EIO (input/output error): boom"
        )
        # the connection is still usable after a per-request error
        with pytest.raises(SourceError, match="EIO"):
            await disk.read(0, 1)


async def test_short_reply_is_a_source_error(fake: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(
        r: object, w: asyncio.StreamWriter, cmd: int, cookie: int, o: int, n: int
    ) -> None:
        w.write(struct.pack(">IIQ", nbd.SIMPLE_REPLY_MAGIC, 0, cookie) + b"x" * (n // 2))
        w.close()

    uri = await fake(handler)
    disk = await NbdDisk.open(uri)
    with pytest.raises(SourceError, match=r"reading 1048576 bytes at 0 from .*short read"):
        await disk.read(0, SIZE)
    with pytest.raises(SourceError, match=r"reading 1 bytes at 0 .*closed the connection"):
        await disk.read(0, 1)
    await disk.close()


async def test_reply_not_covering_the_read(fake: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(
        r: object, w: asyncio.StreamWriter, cmd: int, cookie: int, o: int, n: int
    ) -> None:
        w.write(structured(0, nbd.REPLY_TYPE_OFFSET_DATA, cookie, struct.pack(">Q", o) + b"a" * 10))
        w.write(structured(1, nbd.REPLY_TYPE_OFFSET_HOLE, cookie, struct.pack(">QI", o + 10, 10)))

    uri = await fake(handler)
    async with await NbdDisk.open(uri) as disk:
        assert await disk.read(100, 20) == b"a" * 10 + b"\0" * 10
        with pytest.raises(SourceError, match="covered 20 of 30 bytes"):
            await disk.read(100, 30)


async def test_partial_block_status_is_walked(fake: Callable[[Handler], Awaitable[str]]) -> None:
    asked: list[tuple[int, int]] = []

    async def handler(
        r: object, w: asyncio.StreamWriter, cmd: int, cookie: int, o: int, n: int
    ) -> None:
        asked.append((o, n))
        # one 64 KiB extent per reply, alternating data / hole+zero by 64 KiB index;
        # the last one runs past the request
        flags = 3 if (o // 65536) % 2 else 0
        step = 65536 - o % 65536
        payload = struct.pack(">III", 7, step + (1 << 20), flags) if o + step >= SIZE else b""
        payload = payload or struct.pack(">III", 7, step, flags)
        w.write(structured(1, nbd.REPLY_TYPE_BLOCK_STATUS, cookie, payload))

    uri = await fake(handler)
    async with await NbdDisk.open(uri) as disk:
        extents = await disk.allocation(1000, SIZE - 1000)
    assert len(asked) == 16
    assert extents[0] == AllocationExtent(1000, 65536 - 1000, zero=False, hole=False)
    assert extents[1] == AllocationExtent(65536, 65536, zero=True, hole=True)
    assert extents[-1].end == SIZE
    assert len(extents) == 16


async def test_concurrent_requests_answered_out_of_order(
    fake: Callable[[Handler], Awaitable[str]],
) -> None:
    held: list[tuple[int, int, int]] = []

    async def handler(
        r: object, w: asyncio.StreamWriter, cmd: int, cookie: int, o: int, n: int
    ) -> None:
        held.append((cookie, o, n))
        if len(held) == 3:  # answer all three, newest first
            for c, off, length in reversed(held):
                data = bytes([off % 251]) * length
                w.write(struct.pack(">IIQ", nbd.SIMPLE_REPLY_MAGIC, 0, c) + data)

    uri = await fake(handler)
    async with await NbdDisk.open(uri) as disk:
        results = await asyncio.gather(disk.read(1, 5), disk.read(2, 6), disk.read(3, 7))
    assert results == [b"\x01" * 5, b"\x02" * 6, b"\x03" * 7]


async def test_open_refused_export_and_no_server(tmp_path: Path) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(struct.pack(">QQH", nbd.NBDMAGIC, nbd.IHAVEOPT, 3))
        await reader.readexactly(4)
        while True:
            _, option, length = struct.unpack(">QII", await reader.readexactly(16))
            await reader.readexactly(length)
            if option == nbd.OPT_GO:
                writer.write(opt_reply(option, nbd.REP_FLAG_ERROR | 2, b"go away"))
                await writer.drain()
                writer.close()
                return
            writer.write(opt_reply(option, nbd.REP_FLAG_ERROR | 1))

    sock = tmp_path / "r.sock"
    server = await asyncio.start_unix_server(refuse, path=str(sock))
    try:
        with pytest.raises(SourceError) as err:
            await NbdDisk.open(f"nbd+unix:///secret?socket={sock}")
        assert str(err.value) == (
            f"opening nbd+unix:///secret?socket={sock}: export 'secret':"
            " forbidden by server policy (NBD_REP_ERR_POLICY): go away"
        )
    finally:
        server.close()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"NBDMAGIC")
        writer.close()

    server = await asyncio.start_unix_server(hang_up, path=str(sock.with_name("h.sock")))
    try:
        with pytest.raises(SourceError, match=r"opening .*closed the connection"):
            await NbdDisk.open(f"nbd+unix:///x?socket={sock.with_name('h.sock')}")
    finally:
        server.close()
