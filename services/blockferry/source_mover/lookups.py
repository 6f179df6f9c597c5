"""Asking the dedupe index which new digests the repository holds already.

Digests are grouped by shard, one request per shard, all asked at once. A shard
that does not answer in time counts as "nothing known" (its chunks are sent and
the target side stores each once); it is then left alone for a while, so a
missing or restarting index slows a backup by one timeout, not one per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from blockferry.mesh import Mesh
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.transport.kafka import Record, shard_of
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.records import LookupReply, LookupRequest

log = logging.getLogger(__name__)


class GlobalLookup:
    """The lookups of one backup task, answered under ``correlation_id``."""

    def __init__(
        self,
        mesh: Mesh,
        repo: str,
        shard_count: int,
        replies: Mailbox,
        correlation_id: str,
        timeout_s: float,
        retry_s: float,
        metrics: SourceMoverMetrics,
    ) -> None:
        self._mesh = mesh
        self._repo = repo
        self._shard_count = shard_count
        self._replies = replies
        self._correlation_id = correlation_id
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._metrics = metrics
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._quiet_until: dict[int, float] = {}
        """Shards that timed out, left alone until then (monotonic time)."""
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GlobalLookup:
        queue = self._replies.open(self._correlation_id)
        self._reader = asyncio.create_task(self._read(queue))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._replies.close(self._correlation_id)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, queue: asyncio.Queue[Record]) -> None:
        while True:
            reply = (await queue.get()).value
            if not isinstance(reply, LookupReply):
                continue
            future = self._waiting.pop(reply.request_id, None)
            if future is not None and not future.done():
                future.set_result(reply.known)

    async def known(self, digests: list[bytes]) -> set[bytes]:
        """The ones of ``digests`` the repository holds, as far as the index answers in time."""
        now = time.monotonic()
        by_shard: dict[int, list[bytes]] = {}
        for digest in digests:
            shard = shard_of(digest, self._shard_count)
            if self._quiet_until.get(shard, 0.0) <= now:
                by_shard.setdefault(shard, []).append(digest)
        if not by_shard:
            return set()
        loop = asyncio.get_running_loop()
        asked: dict[int, tuple[list[bytes], asyncio.Future[bytes]]] = {}
        deadline_ms = int((time.time() + self._timeout_s) * 1000)
        acks: list[asyncio.Future[Any]] = []
        for shard, shard_digests in by_shard.items():
            request_id = uuid.uuid4().hex
            answer: asyncio.Future[bytes] = loop.create_future()
            self._waiting[request_id] = answer
            asked[shard] = (shard_digests, answer)
            acks.append(
                await self._mesh.producer.send(
                    self._mesh.topics.lookups(self._repo),
                    LookupRequest(
                        request_id=request_id,
                        reply_to=self._correlation_id,
                        deadline_ms=deadline_ms,
                        digests=b"".join(shard_digests),
                    ),
                    partition=shard,
                )
            )
        for ack in acks:  # a request that was not delivered simply goes unanswered
            ack.add_done_callback(_retrieve)
        await asyncio.wait([a for _, a in asked.values()], timeout=self._timeout_s)
        known: set[bytes] = set()
        for shard, (shard_digests, answer) in asked.items():
            if answer.done() and len(answer.result()) * 8 >= len(shard_digests):
                bitmap = answer.result()
                known.update(
                    d for i, d in enumerate(shard_digests) if bitmap[i // 8] >> (i % 8) & 1
                )
                self._metrics.lookups.labels("answered").inc()
            else:
                answer.cancel()
                self._quiet_until[shard] = time.monotonic() + self._retry_s
                self._metrics.lookups.labels("timed-out").inc()
                log.warning(
                    "%s: no dedupe-index answer for shard %d within %.1f s; sending its chunks"
                    " and asking again in %.0f s",
                    self._repo,
                    shard,
                    self._timeout_s,
                    self._retry_s,
                )
        self._waiting = {k: f for k, f in self._waiting.items() if not f.done()}
        return known


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a lookup request was not delivered: %s", future.exception())
