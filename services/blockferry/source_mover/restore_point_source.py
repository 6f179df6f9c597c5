"""A disk of a restore point in another repository, read as a backup reads a disk: the
source of a copy (``restore-point://REPOSITORY/RESTORE_POINT/DISK``).

The source repository's owner streams the blocks the copy reads, as it streams a
restore, and each is checked end to end (checksum, size, digest under the source's
dedupe key) before the backup takes it. Its fixed index is fetched first, so its zero
blocks are never streamed, and when the two repositories share the dedupe key and
block size (a destination made with ``repo init --copy-params-from``) each block's
digest at the destination is known before it is read: the copy reads only the blocks
that differ from its parent there."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import Executor

from blockferry.core import blocks
from blockferry.core.block_set import BlockSet
from blockferry.core.errors import CorruptionError, SourceError
from blockferry.core.restore_point_uri import parse_restore_point_uri
from blockferry.mesh import Mesh
from blockferry.source_mover.changes import ParentIndex, fetch_fixed_index
from blockferry.source_mover.restore import RestoreStream, describe_blocks, plaintext
from blockferry.transport.commands import RESTORE, RestoreArguments
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.records import RepositoryInfo, RestoreBlock, RestoreEnd, RestoreStart
from blockferry.transport.topics import MAX_RECORD_BYTES

STREAM_IDLE_TIMEOUT_S = 120.0


class RestorePointSource:
    """One disk of a restore point, its blocks streamed by its repository's owner.

    Blocks are asked for in increasing order, as a backup reads them: :meth:`stream`
    names them all first, then :meth:`read_block` takes each in turn (callable from
    several tasks at once, in the order of their blocks).
    """

    def __init__(
        self,
        mesh: Mesh,
        pool: Executor,
        uri: str,
        repository: RepositoryInfo,
        key: bytes,
        index: ParentIndex,
        session: str,
        attempt: int,
        same_digests: bool,
    ) -> None:
        self.path = uri
        self.block_size = index.block_size
        self.size = index.disk_size
        self.blocks = len(index.digests)
        self.index = index
        self.same_digests = same_digests
        """The destination digests a block as the source does (the same dedupe key)."""
        self._mesh = mesh
        self._pool = pool
        self._repository = repository
        self._key = key
        self._session = session
        self._attempt = attempt
        self._stream: RestoreStream | None = None
        self._attempt_id = ""
        self._wanted = BlockSet(self.blocks)
        self._arrived: dict[int, RestoreBlock] = {}
        self._damaged: set[int] = set()
        self._ended = False
        self._pump = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        mesh: Mesh,
        pool: Executor,
        replies: Mailbox,
        uri: str,
        repository: RepositoryInfo,
        key: bytes,
        destination: RepositoryInfo,
        session: str,
        attempt: int,
    ) -> RestorePointSource:
        """Fetch the restore point's fixed index of the disk from ``repository``'s owner
        (``replies``: its replies' mailbox).

        Raises:
            SourceError: blocks of another size than the destination's (copying
                between them would mean cutting blocks anew, which copies do not do).
        """
        _, restore_point, disk = parse_restore_point_uri(uri)
        index = await fetch_fixed_index(
            mesh, replies, repository.name, restore_point, disk, STREAM_IDLE_TIMEOUT_S
        )
        if index.block_size != destination.block_size:
            raise SourceError(
                f"copying {uri}: its blocks are of {index.block_size // 1024} KiB, those of"
                f" {destination.name} of {destination.block_size // 1024} KiB; a copy keeps"
                f" the blocks, so create the destination with `blockferry repo init"
                f" --copy-params-from` the source"
            )
        same = repository.dedupe_key_fingerprint == destination.dedupe_key_fingerprint
        return cls(mesh, pool, uri, repository, key, index, session, attempt, same)

    async def zero_blocks(self) -> BlockSet:
        """The blocks the restore point holds as zeros: never streamed, never read."""
        zero = blocks.ZERO_DIGEST
        return BlockSet(self.blocks, (i for i, d in enumerate(self.index.digests) if d == zero))

    def differing_blocks(self, parent: ParentIndex) -> BlockSet:
        """The blocks whose digest differs from ``parent``'s (with the same digests)."""
        theirs = parent.digests
        return BlockSet(
            self.blocks,
            (
                i
                for i, digest in enumerate(self.index.digests)
                if i >= len(theirs) or theirs[i] != digest
            ),
        )

    async def stream(self, wanted: BlockSet) -> None:
        """Ask the owner for the ``wanted`` blocks (data blocks), which are then read
        in order; a stream under way is dropped first."""
        await self._close_stream()
        self._wanted, self._arrived, self._damaged, self._ended = wanted, {}, set(), False
        if not wanted:
            self._ended = True
            return
        self._attempt_id = uuid.uuid4().hex
        _, restore_point, disk = parse_restore_point_uri(self.path)
        topic = self._mesh.topics.restore(self._repository.name)
        self._stream = await RestoreStream.open(self._mesh, topic, self._session)
        arguments = RestoreArguments(
            session_id=self._session,
            restore_point=restore_point,
            disk=disk,
            attempt_id=self._attempt_id,
            attempt=self._attempt,
            blocks=selection(wanted),
        )
        await self._mesh.commands.send(
            self._mesh.topics.requests(self._repository.name),
            RESTORE,
            arguments,
            STREAM_IDLE_TIMEOUT_S,
        )

    async def read_block(self, index: int) -> bytes:
        """Block ``index``'s bytes, checked end to end.

        Raises:
            CorruptionError: its chunk is damaged or missing in the source repository,
                it never came, or it does not check.
        """
        async with self._pump:
            while index not in self._arrived:
                if self._ended:
                    raise CorruptionError(self._why_not(index))
                await self._take()
            record = self._arrived.pop(index)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, plaintext, record, self._key)

    async def _take(self) -> None:
        """Take the stream's next record of this attempt."""
        assert self._stream is not None, "read_block before stream"
        record = await self._stream.next(STREAM_IDLE_TIMEOUT_S)
        if record.attempt_id != self._attempt_id:
            return
        if isinstance(record, RestoreStart):
            if (record.disk_size, record.block_size) != (self.size, self.block_size):
                raise CorruptionError(
                    f"copying {self.path}: the stream is of a disk of {record.disk_size} bytes"
                    f" in blocks of {record.block_size}, the fixed index of {self.size}"
                    f" bytes in blocks of {self.block_size}"
                )
        elif isinstance(record, RestoreBlock):
            index = record.block
            # an owner that knows no selection streams every block: the rest are dropped
            if index in self._wanted and self.index.digest(index) == record.digest:
                self._arrived.setdefault(index, record)
            elif index in self._wanted:
                raise CorruptionError(
                    f"copying {self.path}: block {index} arrived with digest"
                    f" {record.digest.hex()}, the fixed index names"
                    f" {(self.index.digest(index) or b'').hex()}"
                )
        elif isinstance(record, RestoreEnd):
            if record.error:
                raise SourceError(f"copying {self.path}: {record.error}")
            self._damaged.update(record.damaged)
            self._ended = True

    def _why_not(self, index: int) -> str:
        what = describe_blocks([index], self.block_size, self.size)
        if index in self._damaged:
            return (
                f"copying {self.path}: {what}: its chunk is damaged or missing in"
                f" {self._repository.name}; nothing of this disk is committed"
            )
        return f"copying {self.path}: {what} never arrived"

    async def _close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.close()

    async def close(self) -> None:
        await self._close_stream()


SELECTION_LIMIT_BYTES = MAX_RECORD_BYTES // 4
"""The largest selection of blocks a copy sends with its request: 4 MiB, a disk of 32
million blocks (8 TiB of 256 KiB blocks). A larger disk's copy asks for every block and
drops the rest as they arrive."""


def selection(wanted: BlockSet, limit: int = SELECTION_LIMIT_BYTES) -> bytes:
    """The restore request's selection of ``wanted``: its bitmap, or empty (every block)
    where the bitmap would make the command larger than ``limit`` bytes allow."""
    bitmap = wanted.to_bytes()
    return bitmap if len(bitmap) <= limit else b""
