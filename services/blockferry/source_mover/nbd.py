"""A small asyncio NBD client for reading disks exported by ``qemu-nbd`` (read-only use).

It speaks the fixed newstyle handshake, negotiates structured replies and the
``base:allocation`` (and optionally ``qemu:dirty-bitmap:NAME``) metadata contexts, then
``NBD_OPT_GO``. In transmission it sends ``NBD_CMD_READ``, ``NBD_CMD_BLOCK_STATUS`` and
``NBD_CMD_DISC``. Requests are pipelined: any number of asyncio tasks may call
:meth:`NbdDisk.read`, :meth:`NbdDisk.allocation` and :meth:`NbdDisk.dirty` at once;
writes to the socket are serialised by a lock and one reader task hands each reply to
the request with the same cookie.

Protocol reference: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md

URIs follow the NBD URI standard (the subset qemu and libnbd agree on):
``nbd://host[:port]/export`` (port 10809 by default) and
``nbd+unix:///export?socket=PATH``. TLS (``nbds``) is not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from blockferry.core.errors import ConfigError, SourceError

DEFAULT_PORT = 10809
#: Largest read sent as one request, even if the server allows more.
MAX_READ = 32 * 1024 * 1024
#: Largest range asked about in one NBD_CMD_BLOCK_STATUS (its length field is 32 bits).
MAX_STATUS = 1 << 30

ALLOCATION_CONTEXT = "base:allocation"
DIRTY_BITMAP_PREFIX = "qemu:dirty-bitmap:"

# --- handshake ----------------------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OLDSTYLE_MAGIC = 0x00420281861253
OPT_REPLY_MAGIC = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERRORS = {
    REP_FLAG_ERROR | 1: "unsupported option (NBD_REP_ERR_UNSUP)",
    REP_FLAG_ERROR | 2: "forbidden by server policy (NBD_REP_ERR_POLICY)",
    REP_FLAG_ERROR | 3: "invalid request (NBD_REP_ERR_INVALID)",
    REP_FLAG_ERROR | 4: "not supported on this platform (NBD_REP_ERR_PLATFORM)",
    REP_FLAG_ERROR | 5: "TLS required (NBD_REP_ERR_TLS_REQD)",
    REP_FLAG_ERROR | 6: "no such export (NBD_REP_ERR_UNKNOWN)",
    REP_FLAG_ERROR | 7: "server is shutting down (NBD_REP_ERR_SHUTDOWN)",
    REP_FLAG_ERROR | 8: "block size negotiation required (NBD_REP_ERR_BLOCK_SIZE_REQD)",
    REP_FLAG_ERROR | 9: "request too big (NBD_REP_ERR_TOO_BIG)",
    REP_FLAG_ERROR | 10: "extended headers required (NBD_REP_ERR_EXT_HEADER_REQD)",
}

INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

# --- transmission -------------------------------------------------------------------
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

CMD_READ = 0
CMD_DISC = 2
CMD_BLOCK_STATUS = 7

TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_CAN_MULTI_CONN = 1 << 8

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR_BIT = 1 << 15
REPLY_TYPE_ERROR = REPLY_TYPE_ERROR_BIT | 1
REPLY_TYPE_ERROR_OFFSET = REPLY_TYPE_ERROR_BIT | 2

STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1
STATE_DIRTY = 1 << 0

# A structured chunk longer than this is a protocol error (guards the reader's memory).
MAX_CHUNK = MAX_READ + 4096

_NBD_ERRNO = {
    1: errno.EPERM,
    5: errno.EIO,
    12: errno.ENOMEM,
    22: errno.EINVAL,
    28: errno.ENOSPC,
    75: errno.EOVERFLOW,
    95: errno.EOPNOTSUPP,
    108: errno.ESHUTDOWN,
}


def _nbd_error_text(code: int) -> str:
    local = _NBD_ERRNO.get(code)
    if local is None:
        return f"server error {code}"
    return f"{errno.errorcode.get(local, str(code))} ({os.strerror(local).lower()})"


# --- URIs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NbdUri:
    """A parsed NBD URI; ``str()`` gives the text it was parsed from."""

    text: str
    transport: Literal["tcp", "unix"]
    export: str
    host: str = ""
    port: int = DEFAULT_PORT
    socket: str = ""

    def __str__(self) -> str:
        return self.text


def parse_nbd_uri(text: str) -> NbdUri:
    """Parse ``nbd://host[:port]/export`` or ``nbd+unix:///export?socket=PATH``.

    Raises :class:`ConfigError` saying what is wrong.
    """

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"NBD URI {text!r}: {why}"
            " (expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)"
        )

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from exc
    if parts.fragment:
        raise bad("a fragment is not allowed")
    if parts.username is not None or parts.password is not None:
        raise bad("user information is not allowed")
    path = parts.path
    if path and not path.startswith("/"):
        raise bad("the export name must follow a '/'")
    export = unquote(path[1:])
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise bad(f"malformed query: {exc}") from exc

    scheme = parts.scheme.lower()
    if scheme == "nbd":
        if not parts.hostname:
            raise bad("no host")
        if query:
            raise bad(f"unexpected query parameter(s) {', '.join(sorted(query))}")
        return NbdUri(
            text=text,
            transport="tcp",
            export=export,
            host=parts.hostname,
            port=DEFAULT_PORT if port is None else port,
        )
    if scheme == "nbd+unix":
        if parts.netloc:
            raise bad("nbd+unix URIs take no host (write nbd+unix:///EXPORT?socket=PATH)")
        unknown = set(query) - {"socket"}
        if unknown:
            raise bad(f"unexpected query parameter(s) {', '.join(sorted(unknown))}")
        sockets = query.get("socket", [])
        if len(sockets) != 1 or not sockets[0]:
            raise bad("needs exactly one non-empty socket=PATH")
        return NbdUri(text=text, transport="unix", export=export, socket=sockets[0])
    if scheme in {"nbds", "nbds+unix"}:
        raise bad("TLS (nbds) is not supported")
    raise bad(f"unsupported scheme {parts.scheme!r}" if parts.scheme else "no scheme")


# --- extents ------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationExtent:
    """A run of the disk from ``base:allocation``: ``zero`` reads as zeros, ``hole`` is
    unallocated (a hole is usually also zero)."""

    offset: int
    length: int
    zero: bool
    hole: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class DirtyExtent:
    """A run of the disk from ``qemu:dirty-bitmap:NAME``: ``dirty`` if written since the
    bitmap was added (at the bitmap's granularity)."""

    offset: int
    length: int
    dirty: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


# --- the client ---------------------------------------------------------------------


class _ProtocolError(Exception):
    """The server broke the protocol or the connection; fails every pending request."""


@dataclass
class _Request:
    cmd: int
    offset: int
    length: int
    future: asyncio.Future[None]
    buffer: memoryview | None = None  # READ: where the data goes
    received: int = 0  # READ: bytes covered by data and hole chunks
    statuses: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # BLOCK_STATUS
    error: str | None = None


class NbdDisk:
    """One read-only NBD connection to one export. Use :meth:`open`, then ``await close()``
    (or ``async with``)."""

    def __init__(
        self,
        uri: NbdUri,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_read: int,
    ) -> None:
        self.uri = uri
        self.size = 0
        #: Transmission flags from NBD_INFO_EXPORT.
        self.flags = 0
        #: (minimum, preferred, maximum) block size; defaults if the server sent none.
        self.block_size = (1, 4096, MAX_READ)
        #: Metadata context name -> id, for the contexts the server agreed to.
        self.contexts: dict[str, int] = {}
        self.structured_replies = False
        self.bitmap: str | None = None
        self._reader = reader
        self._writer = writer
        self._max_read = max_read
        self._write_lock = asyncio.Lock()
        self._pending: dict[int, _Request] = {}
        self._next_cookie = 1
        self._broken: str | None = None
        self._closed = False
        self._reader_task: asyncio.Task[None] | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        uri: str | NbdUri,
        bitmap: str | None = None,
        *,
        timeout: float = 30.0,
        max_read: int = MAX_READ,
        structured_replies: bool = True,
    ) -> NbdDisk:
        """Connect and negotiate. ``bitmap`` names a dirty bitmap (qemu-nbd ``-B NAME``)
        for :meth:`dirty`. ``structured_replies=False`` forces simple replies (then
        :meth:`allocation` reports everything as data and :meth:`dirty` is unavailable).

        Raises :class:`ConfigError` for a bad URI, :class:`SourceError` if the server
        cannot be reached, refuses the export or lacks the bitmap.
        """
        parsed = uri if isinstance(uri, NbdUri) else parse_nbd_uri(uri)
        if max_read < 512:
            raise ConfigError(f"NBD max_read {max_read}: must be at least 512")
        try:
            async with asyncio.timeout(timeout):
                if parsed.transport == "unix":
                    reader, writer = await asyncio.open_unix_connection(parsed.socket)
                else:
                    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        except TimeoutError as exc:
            raise SourceError(f"connecting to {parsed}: timed out after {timeout:g} s") from exc
        except OSError as exc:
            raise SourceError(f"connecting to {parsed}: {exc.strerror or exc}") from exc
        disk = cls(parsed, reader, writer, max_read)
        try:
            async with asyncio.timeout(timeout):
                await disk._handshake(bitmap, structured_replies)
        except BaseException as exc:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if isinstance(exc, SourceError):
                raise
            if isinstance(exc, TimeoutError):
                raise SourceError(
                    f"opening {parsed}: handshake timed out after {timeout:g} s"
                ) from exc
            if isinstance(exc, (OSError, asyncio.IncompleteReadError, _ProtocolError)):
                raise SourceError(f"opening {parsed}: {_describe(exc)}") from exc
            raise
        disk._reader_task = asyncio.create_task(disk._read_replies(), name=f"nbd-reader {parsed}")
        return disk

    async def __aenter__(self) -> NbdDisk:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _recv(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, await self._reader.readexactly(struct.calcsize(fmt)))

    async def _send_option(self, option: int, data: bytes = b"") -> None:
        self._writer.write(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)
        await self._writer.drain()

    async def _option_reply(self, option: int) -> tuple[int, bytes]:
        magic, opt, reply, length = await self._recv(">QIII")
        if magic != OPT_REPLY_MAGIC:
            raise _ProtocolError(f"bad option reply magic {magic:#x}")
        if opt != option:
            raise _ProtocolError(f"reply for option {opt} while negotiating option {option}")
        if length > 1 << 20:
            raise _ProtocolError(f"option reply of {length} bytes")
        data = await self._reader.readexactly(length)
        return reply, data

    def _option_error(self, what: str, reply: int, data: bytes) -> SourceError:
        why = REP_ERRORS.get(reply, f"error reply {reply:#x}")
        message = data.decode("utf-8", "replace").strip()
        detail = f": {message}" if message else ""
        return SourceError(f"opening {self.uri}: {what}: {why}{detail}")

    async def _handshake(self, bitmap: str | None, structured: bool) -> None:
        magic, second = await self._recv(">QQ")
        if magic != NBDMAGIC:
            raise _ProtocolError(f"not an NBD server (magic {magic:#x})")
        if second == OLDSTYLE_MAGIC:
            raise _ProtocolError("oldstyle NBD servers are not supported")
        if second != IHAVEOPT:
            raise _ProtocolError(f"unknown handshake magic {second:#x}")
        (server_flags,) = await self._recv(">H")
        if not server_flags & FLAG_FIXED_NEWSTYLE:
            raise _ProtocolError("the server does not support fixed newstyle negotiation")
        client_flags = FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES)
        self._writer.write(struct.pack(">I", client_flags))

        export = self.uri.export.encode()
        if structured:
            await self._send_option(OPT_STRUCTURED_REPLY)
            reply, data = await self._option_reply(OPT_STRUCTURED_REPLY)
            if reply == REP_ACK:
                self.structured_replies = True
            elif not reply & REP_FLAG_ERROR:
                raise _ProtocolError(f"unexpected reply {reply} to NBD_OPT_STRUCTURED_REPLY")

        if self.structured_replies:
            queries = [ALLOCATION_CONTEXT]
            if bitmap is not None:
                queries.append(DIRTY_BITMAP_PREFIX + bitmap)
            payload = struct.pack(">I", len(export)) + export + struct.pack(">I", len(queries))
            for query in queries:
                q = query.encode()
                payload += struct.pack(">I", len(q)) + q
            await self._send_option(OPT_SET_META_CONTEXT, payload)
            while True:
                reply, data = await self._option_reply(OPT_SET_META_CONTEXT)
                if reply == REP_ACK:
                    break
                if reply == REP_META_CONTEXT:
                    if len(data) < 4:
                        raise _ProtocolError("short NBD_REP_META_CONTEXT")
                    (context_id,) = struct.unpack_from(">I", data)
                    self.contexts[data[4:].decode("utf-8", "replace")] = context_id
                elif reply & REP_FLAG_ERROR:
                    # An unknown export is reported by NBD_OPT_GO below; other errors
                    # just mean no contexts.
                    break
                else:
                    raise _ProtocolError(f"unexpected reply {reply} to NBD_OPT_SET_META_CONTEXT")

        payload = struct.pack(">I", len(export)) + export + struct.pack(">HH", 1, INFO_BLOCK_SIZE)
        await self._send_option(OPT_GO, payload)
        got_export = False
        while True:
            reply, data = await self._option_reply(OPT_GO)
            if reply == REP_ACK:
                break
            if reply == REP_INFO:
                if len(data) < 2:
                    raise _ProtocolError("short NBD_REP_INFO")
                (info,) = struct.unpack_from(">H", data)
                if info == INFO_EXPORT:
                    if len(data) != 12:
                        raise _ProtocolError(f"NBD_INFO_EXPORT of {len(data)} bytes")
                    self.size, self.flags = struct.unpack_from(">QH", data, 2)
                    got_export = True
                elif info == INFO_BLOCK_SIZE:
                    if len(data) != 14:
                        raise _ProtocolError(f"NBD_INFO_BLOCK_SIZE of {len(data)} bytes")
                    minimum, preferred, maximum = struct.unpack_from(">III", data, 2)
                    self.block_size = (minimum, preferred, maximum)
                continue
            if reply & REP_FLAG_ERROR:
                raise self._option_error(f"export {self.uri.export!r}", reply, data)
            raise _ProtocolError(f"unexpected reply {reply} to NBD_OPT_GO")
        if not got_export:
            raise _ProtocolError("the server sent no NBD_INFO_EXPORT")
        if bitmap is not None:
            if DIRTY_BITMAP_PREFIX + bitmap not in self.contexts:
                raise SourceError(
                    f"opening {self.uri}: the export offers no dirty bitmap {bitmap!r}"
                    f" (context {DIRTY_BITMAP_PREFIX}{bitmap}; start qemu-nbd with -B {bitmap})"
                )
            self.bitmap = bitmap

    # -- transmission ----------------------------------------------------------------

    async def _submit(self, request: _Request, action: str) -> _Request:
        """Send one request and wait for its complete reply."""
        if self._closed:
            raise SourceError(f"{action} from {self.uri}: the disk is closed")
        if self._broken is not None:
            raise SourceError(f"{action} from {self.uri}: {self._broken}")
        cookie = self._next_cookie
        self._next_cookie += 1
        self._pending[cookie] = request
        header = struct.pack(
            ">IHHQQI", REQUEST_MAGIC, 0, request.cmd, cookie, request.offset, request.length
        )
        try:
            async with self._write_lock:
                self._writer.write(header)
                await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            self._pending.pop(cookie, None)
            raise SourceError(f"{action} from {self.uri}: sending: {_describe(exc)}") from exc
        try:
            await request.future
        except _ProtocolError as exc:
            raise SourceError(f"{action} from {self.uri}: {exc}") from None
        if request.error is not None:
            raise SourceError(f"{action} from {self.uri}: {request.error}")
        return request

    def _check_range(self, offset: int, length: int, action: str) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SourceError(
                f"{action} from {self.uri}: outside the disk (size {self.size} bytes)"
            )

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; holes read as zeros. Large reads are split into
        requests no larger than the server's maximum block size (and ``max_read``), sent
        together."""
        action = f"reading {length} bytes at {offset}"
        self._check_range(offset, length, action)
        if length == 0:
            return b""
        buffer = bytearray(length)
        view = memoryview(buffer)
        step = self._read_step()
        requests = []
        for start in range(0, length, step):
            size = min(step, length - start)
            requests.append(
                _Request(
                    CMD_READ,
                    offset + start,
                    size,
                    asyncio.get_running_loop().create_future(),
                    buffer=view[start : start + size],
                )
            )
        results = await asyncio.gather(
            *(self._submit(r, action) for r in requests), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return bytes(buffer)

    def _read_step(self) -> int:
        minimum, _preferred, maximum = self.block_size
        step = min(self._max_read, maximum or MAX_READ)
        if minimum > 1:
            step -= step % minimum
        return max(step, minimum, 1)

    async def _block_status(
        self, context: str, offset: int, length: int, action: str
    ) -> list[tuple[int, int, int]]:
        """``(offset, length, flags)`` runs covering exactly ``[offset, offset+length)``
        for one negotiated metadata context, asking again where the server said less."""
        context_id = self.contexts[context]
        end = offset + length
        runs: list[tuple[int, int, int]] = []
        position = offset
        while position < end:
            ask = min(end - position, MAX_STATUS)
            request = await self._submit(
                _Request(
                    CMD_BLOCK_STATUS, position, ask, asyncio.get_running_loop().create_future()
                ),
                action,
            )
            descriptors = request.statuses.get(context_id)
            if not descriptors:
                raise SourceError(
                    f"{action} from {self.uri}: no extents for context {context}"
                    f" at offset {position}"
                )
            for run_length, flags in descriptors:
                if position >= end:
                    break
                if run_length == 0:
                    raise SourceError(
                        f"{action} from {self.uri}: zero-length extent at offset {position}"
                    )
                run_length = min(run_length, end - position)
                if runs and runs[-1][2] == flags and runs[-1][0] + runs[-1][1] == position:
                    last = runs[-1]
                    runs[-1] = (last[0], last[1] + run_length, flags)
                else:
                    runs.append((position, run_length, flags))
                position += run_length
        return runs

    async def allocation(self, offset: int, length: int) -> list[AllocationExtent]:
        """Extents covering ``[offset, offset+length)`` from ``base:allocation``
        (adjacent extents with the same flags merged). Without that context (no
        structured replies) the whole range is reported as allocated data."""
        action = f"querying allocation of {length} bytes at {offset}"
        self._check_range(offset, length, action)
        if length == 0:
            return []
        if ALLOCATION_CONTEXT not in self.contexts:
            return [AllocationExtent(offset, length, zero=False, hole=False)]
        return [
            AllocationExtent(o, n, zero=bool(f & STATE_ZERO), hole=bool(f & STATE_HOLE))
            for o, n, f in await self._block_status(ALLOCATION_CONTEXT, offset, length, action)
        ]

    async def dirty(self, offset: int, length: int) -> list[DirtyExtent]:
        """Extents covering ``[offset, offset+length)`` from the dirty bitmap given to
        :meth:`open` (adjacent extents with the same state merged)."""
        action = f"querying dirty bitmap of {length} bytes at {offset}"
        if self.bitmap is None:
            raise SourceError(f"{action} from {self.uri}: no dirty bitmap was opened")
        self._check_range(offset, length, action)
        if length == 0:
            return []
        context = DIRTY_BITMAP_PREFIX + self.bitmap
        return [
            DirtyExtent(o, n, dirty=bool(f & STATE_DIRTY))
            for o, n, f in await self._block_status(context, offset, length, action)
        ]

    async def close(self) -> None:
        """Send NBD_CMD_DISC and close the connection; pending requests fail."""
        if self._closed:
            return
        self._closed = True
        if self._broken is None:
            with contextlib.suppress(Exception):
                async with self._write_lock:
                    self._writer.write(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
                    await self._writer.drain()
        self._fail_all("the disk was closed")
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    # -- the reply reader ------------------------------------------------------------

    def _fail_all(self, why: str) -> None:
        if self._broken is None:
            self._broken = why
        pending, self._pending = self._pending, {}
        for request in pending.values():
            if not request.future.done():
                request.future.set_exception(_ProtocolError(why))

    async def _read_replies(self) -> None:
        try:
            while True:
                await self._read_reply()
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError as exc:
            if self._closed:
                return
            why = (
                "the server closed the connection"
                if not exc.partial
                else "the server closed the connection in the middle of a reply"
            )
            self._fail_all(f"{why} (short read)")
        except (OSError, _ProtocolError) as exc:
            self._fail_all(_describe(exc))
        except Exception as exc:  # a bug here must not leave readers waiting forever
            self._fail_all(f"internal error reading replies: {exc!r}")
            raise
        finally:
            self._writer.close()

    def _request_for(self, cookie: int) -> _Request:
        request = self._pending.get(cookie)
        if request is None:
            raise _ProtocolError(f"reply for unknown cookie {cookie}")
        return request

    def _finish(self, cookie: int, request: _Request) -> None:
        self._pending.pop(cookie, None)
        if request.cmd == CMD_READ and request.error is None and request.received != request.length:
            request.error = (
                f"the server's reply covered {request.received} of {request.length} bytes"
            )
        if not request.future.done():
            request.future.set_result(None)

    async def _read_reply(self) -> None:
        (magic,) = await self._recv(">I")
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = await self._recv(">IQ")
            request = self._request_for(cookie)
            if error:
                request.error = _nbd_error_text(error)
            elif request.cmd == CMD_READ:
                assert request.buffer is not None
                request.buffer[:] = await self._reader.readexactly(request.length)
                request.received = request.length
            elif request.cmd == CMD_BLOCK_STATUS:
                request.error = "the server sent a simple reply to NBD_CMD_BLOCK_STATUS"
            self._finish(cookie, request)
            return
        if magic != STRUCTURED_REPLY_MAGIC:
            raise _ProtocolError(f"bad reply magic {magic:#x}")
        flags, kind, cookie, length = await self._recv(">HHQI")
        if length > MAX_CHUNK:
            raise _ProtocolError(f"reply chunk of {length} bytes")
        request = self._request_for(cookie)
        payload = await self._reader.readexactly(length)
        if kind == REPLY_TYPE_OFFSET_DATA and request.cmd == CMD_READ:
            if length < 8:
                raise _ProtocolError("short NBD_REPLY_TYPE_OFFSET_DATA")
            (chunk_offset,) = struct.unpack_from(">Q", payload)
            self._place(request, chunk_offset, length - 8, payload[8:])
        elif kind == REPLY_TYPE_OFFSET_HOLE and request.cmd == CMD_READ:
            if length != 12:
                raise _ProtocolError("malformed NBD_REPLY_TYPE_OFFSET_HOLE")
            chunk_offset, hole = struct.unpack(">QI", payload)
            self._place(request, chunk_offset, hole, None)
        elif kind == REPLY_TYPE_BLOCK_STATUS and request.cmd == CMD_BLOCK_STATUS:
            if length < 12 or (length - 4) % 8:
                raise _ProtocolError("malformed NBD_REPLY_TYPE_BLOCK_STATUS")
            (context_id,) = struct.unpack_from(">I", payload)
            descriptors = list(struct.iter_unpack(">II", payload[4:]))
            request.statuses.setdefault(context_id, []).extend(descriptors)
        elif kind & REPLY_TYPE_ERROR_BIT:
            if length < 6:
                raise _ProtocolError("short error chunk")
            error, message_length = struct.unpack_from(">IH", payload)
            if 6 + message_length > length:
                raise _ProtocolError("malformed error chunk")
            message = payload[6 : 6 + message_length].decode("utf-8", "replace")
            text = _nbd_error_text(error)
            if kind == REPLY_TYPE_ERROR_OFFSET and length >= 6 + message_length + 8:
                (at,) = struct.unpack_from(">Q", payload, 6 + message_length)
                text += f" at offset {at}"
            if message:
                text += f": {message}"
            if request.error is None:
                request.error = text
        elif kind != REPLY_TYPE_NONE:
            raise _ProtocolError(f"unexpected reply chunk type {kind} for command {request.cmd}")
        if flags & REPLY_FLAG_DONE:
            self._finish(cookie, request)

    @staticmethod
    def _place(request: _Request, chunk_offset: int, size: int, data: bytes | None) -> None:
        start = chunk_offset - request.offset
        if start < 0 or start + size > request.length or size == 0:
            raise _ProtocolError(
                f"reply chunk [{chunk_offset}, +{size}) outside the request"
                f" [{request.offset}, +{request.length})"
            )
        assert request.buffer is not None
        if data is not None:
            request.buffer[start : start + size] = data
        # holes: the buffer starts zeroed
        request.received += size


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return f"the server closed the connection (short read: {len(exc.partial)} bytes)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
