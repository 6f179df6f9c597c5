"""Commands to a repository's owner: commit a restore point, stream a restore,
verify, list restore points. Only the owner opens the repository's files."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from datetime import datetime
from typing import Any

from blockferry.command_server import CommandServer, Handler
from blockferry.core import blocks
from blockferry.core.block_set import BlockSet
from blockferry.core.errors import BlockferryError, ConfigError, CorruptionError
from blockferry.ingest.changelog import publish_entries, publish_tombstones
from blockferry.ingest.context import IngestContext
from blockferry.repository import RestorePoint, verify
from blockferry.repository.gc import collect_garbage
from blockferry.repository.ids import parse_time
from blockferry.repository.retention import Policy
from blockferry.transport import commands as cmd
from blockferry.transport.codec import signed64
from blockferry.transport.records import FixedIndexPage, RestoreBlock, RestoreEnd, RestoreStart

log = logging.getLogger(__name__)

RESTORE_READ_AHEAD = 8
FIXED_INDEX_PAGE_BLOCKS = 16384
"""Digests a FixedIndexPage carries: 512 KiB, 16 GiB of disk at 1 MiB blocks."""


def describe_restore_point(rp: RestorePoint) -> cmd.RestorePointInfo:
    """A restore point as the API shows it."""
    body = rp.to_dict()
    stats = {disk: _disk_stats(value) for disk, value in body.pop("stats").items()}
    return cmd.RestorePointInfo.model_validate({**body, "stats": stats})


def stored_stats(stats: dict[str, cmd.DiskStats]) -> dict[str, Any]:
    """A backup's statistics as restorepoint.json keeps them: per disk its counters,
    how its changes were found and its parent."""
    return {
        disk: {**s.counters, "tracking": s.tracking, "parent": s.parent}
        for disk, s in stats.items()
    }


def _disk_stats(stored: Any) -> cmd.DiskStats:
    """One disk's statistics from restorepoint.json (see :func:`stored_stats`)."""
    if not isinstance(stored, dict):
        return cmd.DiskStats()
    counters = {
        name: value
        for name, value in stored.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
    return cmd.DiskStats(
        counters=counters, tracking=str(stored.get("tracking") or ""), parent=stored.get("parent")
    )


class RepositoryServer(CommandServer):
    """Answers commands on one topic of a repository; replies on its replies topic."""

    def __init__(self, ctx: IngestContext, name: str, group: str, topic: str) -> None:
        super().__init__(
            ctx.mesh,
            f"{name}-{ctx.name}",
            group,
            topic,
            ctx.mesh.topics.replies(ctx.name),
            lambda reason: ctx.metrics.commands_refused.labels(ctx.name, reason).inc(),
        )
        self._ctx = ctx

    def public(self, message: str) -> str:
        """The repository's place becomes its name: callers see no server paths."""
        return message.replace(self._ctx.repo.where, f"repository {self._ctx.name}")

    async def _forget(self, digests: set[bytes]) -> None:
        """Tell the changelog about quarantined chunks: a tombstone where no good copy is
        left (the dedupe index forgets it, so the next backup sends it), else the entry
        of the copy that is now located."""
        copies = {d: self._ctx.repo.locate(d) for d in sorted(digests)}
        await publish_tombstones(self._ctx, [d for d, copy in copies.items() if copy is None])
        await publish_entries(self._ctx, [copy for copy in copies.values() if copy is not None])


class OwnerCommands(RepositoryServer):
    """The orchestrator's commands to the repository (``<repo>.commands``)."""

    def __init__(self, ctx: IngestContext, more: list[Handler[Any, Any]]) -> None:
        """``more``: the handlers of other commands on the same topic (files, exports)."""
        self._more = more
        super().__init__(ctx, "commands", f"{ctx.name}.owner", ctx.mesh.topics.commands(ctx.name))

    def handlers(self) -> list[Handler[Any, Any]]:
        return [
            *self._more,
            Handler(cmd.COMMIT, self._commit),
            Handler(cmd.DISCARD, self._discard),
            Handler(cmd.GC, self._gc),
            Handler(cmd.PRUNE, self._prune),
            Handler(cmd.LIST_RESTORE_POINTS, self._list_restore_points),
            Handler(cmd.RESTORE_POINT, self._restore_point),
            Handler(cmd.VERIFY, self._verify),
            Handler(cmd.LATEST_RESTORE_POINT, self._latest_restore_point),
            Handler(cmd.DESCRIBE, self._describe),
            Handler(cmd.START_GENERATION, self._start_generation),
        ]

    async def _commit(self, args: cmd.CommitArguments, _: str) -> cmd.RestorePointInfo:
        def commit() -> RestorePoint:
            return self._ctx.repo.commit_restore_point(
                job=args.job,
                session_id=args.session_id,
                disks=args.disks,
                parent=args.parent,
                stats=stored_stats(args.stats),
                restore_point_id=args.restore_point,
                created=_created(args.created),
            )

        rp = await self._ctx.when_unlocked(commit)
        return describe_restore_point(rp)

    async def _discard(self, args: cmd.DiscardArguments, _: str) -> cmd.Done:
        """A session ended without a restore point (failed, cancelled): drop its staging."""
        await self._ctx.in_pool(self._ctx.repo.discard_staging, args.session_id)
        return cmd.Done()

    async def _gc(self, args: cmd.GcArguments, _: str) -> cmd.GcResult:
        """Garbage collection, then the changelog told: moved chunks' new places and
        tombstones for the removed ones (so dedupe lookups stop finding them)."""
        if not args.dry_run:
            self._refuse_if_append_only("gc")
        result = await self._ctx.in_maintenance(
            functools.partial(
                collect_garbage,
                self._ctx.repo,
                pack_size=self._ctx.config.pack_size,
                grace=self._ctx.config.gc_grace,
                keep_since=args.keep_since,
                dry_run=args.dry_run,
            )
        )
        await publish_entries(self._ctx, result.moved)
        await publish_tombstones(self._ctx, result.removed)
        return cmd.GcResult(**result.summary())

    async def _prune(self, args: cmd.PruneArguments, _: str) -> cmd.PruneResult:
        if not args.dry_run:
            self._refuse_if_append_only("prune")
        policy = Policy(**args.policy.model_dump())
        result = await self._ctx.in_maintenance(
            functools.partial(self._ctx.repo.prune, args.job, policy, dry_run=args.dry_run)
        )
        return cmd.PruneResult(kept=result.kept, removed=result.removed)

    def _refuse_if_append_only(self, command: str) -> None:
        if self._ctx.config.append_only:
            raise ConfigError(
                f"repository {self._ctx.name} is append-only for its owner, whose"
                f" credentials cannot delete: run `blockferry repo {command} REPOSITORY`"
                " with the repository's maintenance credentials"
            )

    async def _list_restore_points(
        self, args: cmd.ListRestorePointsArguments, _: str
    ) -> cmd.RestorePointList:
        rps = await self._ctx.in_pool(self._ctx.repo.restore_points, args.job)
        return cmd.RestorePointList(restore_points=[describe_restore_point(rp) for rp in rps])

    async def _restore_point(self, args: cmd.RestorePointArguments, _: str) -> cmd.RestorePointInfo:
        rp = await self._ctx.in_pool(self._ctx.repo.restore_point, args.restore_point)
        return describe_restore_point(rp)

    async def _verify(self, args: cmd.VerifyArguments, _: str) -> cmd.VerifyReport:
        """Verify; the changelog learns of the chunks it quarantined, so that the dedupe
        index stops naming them and the next backup sends them again."""
        report = await self._ctx.in_maintenance(verify, self._ctx.repo, args.restore_point)
        await self._forget({entry.digest for entry in report.quarantined})
        metrics, name = self._ctx.metrics, self._ctx.name
        metrics.verifies.labels(name, "ok" if report.ok else "damaged").inc()
        metrics.verify_damage.labels(name).inc(len(report.damage))
        return cmd.VerifyReport.model_validate({**report.to_dict(), "summary": report.summary()})

    async def _latest_restore_point(
        self, args: cmd.LatestRestorePointArguments, _: str
    ) -> cmd.LatestRestorePoint:
        """The newest committed restore point of a job's disk: an incremental's parent."""
        rp = await self._ctx.in_pool(self._ctx.repo.latest_restore_point, args.job, args.disk)
        return cmd.LatestRestorePoint(restore_point=rp.id if rp is not None else None)

    async def _describe(self, _args: cmd.DescribeArguments, _: str) -> cmd.RepositoryDescription:
        config = self._ctx.repo.config
        return cmd.RepositoryDescription(
            id=config.id, block_size=config.block_size, shard_count=config.shard_count
        )

    async def _start_generation(
        self, _args: cmd.StartGenerationArguments, _: str
    ) -> cmd.Generation:
        generation = await self._ctx.in_pool(self._ctx.repo.start_generation)
        return cmd.Generation(generation=generation)


class MoverRequests(RepositoryServer):
    """The source movers' requests to the repository (``<repo>.requests``): a restore
    point's fixed index, and a restore's stream."""

    def __init__(self, ctx: IngestContext) -> None:
        super().__init__(
            ctx, "requests", f"{ctx.name}.owner-requests", ctx.mesh.topics.requests(ctx.name)
        )

    def handlers(self) -> list[Handler[Any, Any]]:
        return [Handler(cmd.FIXED_INDEX, self._fixed_index), Handler(cmd.RESTORE, self._restore)]

    async def _fixed_index(self, args: cmd.FixedIndexArguments, command_id: str) -> None:
        """Send a restore point's fixed index of a disk in pages (a big disk's index is
        larger than one record); a failure is answered with an error Reply instead."""
        rp = await self._ctx.in_pool(self._ctx.repo.restore_point, args.restore_point)
        fidx = await self._ctx.in_pool(self._ctx.repo.read_fixed_index, rp, args.disk)
        data = fidx.digests.data
        step = FIXED_INDEX_PAGE_BLOCKS * blocks.DIGEST_SIZE
        starts = range(0, max(len(data), 1), step)
        for start in starts:
            page = FixedIndexPage(
                correlation_id=command_id,
                disk_size=fidx.disk_size,
                block_size=fidx.block_size,
                first_block=start // blocks.DIGEST_SIZE,
                digests=data[start : start + step],
                last=start == starts[-1],
            )
            await self._ctx.mesh.producer.send(
                self._ctx.mesh.topics.replies(self._ctx.name), page, key=command_id
            )
        await self._ctx.mesh.producer.flush()

    async def _restore(self, args: cmd.RestoreArguments, _command_id: str) -> None:
        """Stream a disk of a restore point on the restore topic; replies go in-stream.

        Every record carries the attempt id the source mover named in the command, so
        a mover reads only its own attempt's stream. A block whose chunk is missing or
        fails its checksum or digest is not sent: it is named in RestoreEnd's
        ``damaged``, and the rest of the disk is still streamed (the mover fails the
        restore naming those blocks, or leaves them as holes when allowed)."""
        session = args.session_id
        attempt_id = args.attempt_id
        topic = self._ctx.mesh.topics.restore(self._ctx.name)
        producer = self._ctx.mesh.bulk_producer
        sent = 0
        damaged: list[int] = []
        damaged_digests: set[bytes] = set()
        reads: deque[tuple[int, bytes, asyncio.Future[Any]]] = deque()
        lock = contextlib.ExitStack()
        try:
            # held while streaming, so garbage collection does not move a chunk meanwhile
            await self._ctx.when_unlocked(
                lambda: lock.enter_context(self._ctx.repo.shared_lock(f"restore {session}"))
            )
            rp = await self._ctx.in_pool(self._ctx.repo.restore_point, args.restore_point)
            fidx = await self._ctx.in_pool(self._ctx.repo.read_fixed_index, rp, args.disk)
            start = RestoreStart(
                session_id=session,
                disk=args.disk,
                disk_size=fidx.disk_size,
                block_size=fidx.block_size,
                attempt_id=attempt_id,
                attempt=args.attempt,
            )
            await producer.send_and_wait(topic, start, key=session)
            only = _selection(len(fidx.digests), args.blocks)
            wanted = [
                (i, d)
                for i, d in enumerate(fidx.digests)
                if d != blocks.ZERO_DIGEST and (only is None or i in only)
            ]
            acks: deque[asyncio.Future[Any]] = deque()
            position = 0
            while position < len(wanted) or reads:
                while position < len(wanted) and len(reads) < RESTORE_READ_AHEAD:
                    index, digest = wanted[position]
                    reads.append((index, digest, asyncio.ensure_future(self._read(digest))))
                    position += 1
                index, digest, read = reads.popleft()
                try:
                    entry, stored = await read
                except BlockferryError as exc:  # the chunk is missing or damaged
                    log.error("restore %s: block %d not sent: %s", session, index, exc)
                    damaged.append(index)
                    damaged_digests.add(digest)
                    continue
                block = RestoreBlock(
                    session_id=session,
                    block=index,
                    digest=digest,
                    compressed=entry.compressed,
                    plain_size=entry.plain_size,
                    checksum=signed64(blocks.checksum(stored)),
                    data=stored,
                    attempt_id=attempt_id,
                )
                acks.append(await producer.send(topic, block, key=session))
                sent += 1
                self._ctx.metrics.bytes_restored.labels(self._ctx.name).inc(len(stored))
                while len(acks) > 32:
                    await acks.popleft()
            for ack in acks:
                await ack
            error = ""
        except BlockferryError as exc:
            log.error("restore %s failed: %s", session, exc)
            error = str(exc)
        finally:
            for _, _, pending in reads:
                pending.cancel()
            await self._ctx.in_pool(lock.close)
        await self._forget(damaged_digests)
        end = RestoreEnd(
            session_id=session,
            blocks_sent=sent,
            error=error,
            attempt_id=attempt_id,
            damaged=damaged,
        )
        await producer.send_and_wait(topic, end, key=session)

    async def _read(self, digest: bytes) -> tuple[Any, bytes]:
        """A chunk's payload, checksum verified (a chunk damaged on disk is never
        streamed, and is quarantined so that the next backup of the block heals it; the
        mover checks size and digest of the plaintext, so they are not computed twice).

        Raises:
            BlockferryError: the chunk is missing or damaged (CorruptionError), naming it.
        """

        def read() -> tuple[Any, bytes]:
            repo = self._ctx.repo
            entry = repo.locate(digest)
            if entry is None:
                raise BlockferryError(f"chunk {digest.hex()} is not in the repository")
            try:
                stored = repo.read_payload(entry)
            except CorruptionError as exc:
                repo.quarantine(entry, str(exc))
                raise
            return entry, stored

        result: tuple[Any, bytes] = await self._ctx.in_pool(read)
        return result


def _selection(count: int, bitmap: bytes) -> BlockSet | None:
    """The blocks a restore asks for (None: every block)."""
    if not bitmap:
        return None
    try:
        return BlockSet.from_bytes(count, bitmap)
    except ValueError as exc:
        raise ConfigError(f"the restore's selection of blocks is not of this disk: {exc}") from exc


def _created(text: str | None) -> datetime | None:
    """A copy's creation time as a commit gives it."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ConfigError(f"a restore point's creation time {text!r}: {exc}") from exc
