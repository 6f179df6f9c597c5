"""One restore task: the pipe reversed. The target side streams a restore point's
blocks; this mover checks each (checksum, then digest of the plaintext) and
writes the destination through a DiskWriter, which publishes it only when whole.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from blockferry.core import blocks
from blockferry.core.errors import CorruptionError, SessionError
from blockferry.mesh import Mesh
from blockferry.restore_target import DiskWriter, check_destination, check_within_roots
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.transport.codec import unsigned64
from blockferry.transport.mailbox import Mailbox, next_record

RESTORE_IDLE_TIMEOUT_S = 120.0


class RestoreRun:
    """Writes one disk of a restore point to the task's destination."""

    def __init__(
        self,
        mesh: Mesh,
        metrics: SourceMoverMetrics,
        pool: Executor,
        task: dict[str, Any],
        repository: dict[str, Any],
        stream: Mailbox,
        restore_roots: list[Path],
    ) -> None:
        self._mesh = mesh
        self._restore_roots = restore_roots
        self._metrics = metrics
        self._pool = pool
        self._task = task
        self._key: bytes = repository["dedupe_key"]
        self._stream = stream
        self.tracking = ""
        self.warnings: list[str] = []
        self.counters: dict[str, int] = {
            "blocks_total": 0,
            "blocks_done": 0,
            "blocks_written": 0,
            "bytes_written": 0,
        }
        """blocks_done: how far the stream got (blocks come in order); blocks_written
        counts the non-zero ones."""

    def progress(self) -> dict[str, int]:
        return dict(self.counters)

    async def run(self) -> None:
        session = self._task["session_id"]
        queue = self._stream.open(session)
        writer: DiskWriter | None = None
        loop = asyncio.get_running_loop()
        try:
            # refuse a destination before the target side reads and streams anything
            destination = Path(self._task["path"])
            await loop.run_in_executor(
                self._pool, check_within_roots, destination, self._restore_roots
            )
            await loop.run_in_executor(
                self._pool,
                functools.partial(check_destination, destination, force=self._task["force"]),
            )
            await self._mesh.producer.send_and_wait(
                self._mesh.topics.commands(self._task["repository"]),
                "Command",
                {
                    "command_id": uuid.uuid4().hex,
                    "name": "restore",
                    "arguments": json.dumps(
                        {
                            "session_id": session,
                            "restore_point": self._task["restore_point"],
                            "disk": self._task["disk"],
                        }
                    ),
                },
            )
            received = 0
            written: set[int] = set()
            while True:
                record = await next_record(queue, RESTORE_IDLE_TIMEOUT_S, f"restore {session}")
                fields = record.fields
                if record.name == "RestoreStart":
                    writer = await loop.run_in_executor(
                        self._pool,
                        functools.partial(
                            DiskWriter.open,
                            Path(self._task["path"]),
                            fields["disk_size"],
                            block_size=fields["block_size"],
                            force=self._task["force"],
                        ),
                    )
                    self.counters["blocks_total"] = blocks.block_count(
                        fields["disk_size"], fields["block_size"]
                    )
                elif record.name == "RestoreBlock":
                    if writer is None:
                        raise SessionError(f"restore {session}: block before start of stream")
                    await loop.run_in_executor(self._pool, self._write, writer, fields)
                    written.add(fields["block"])
                    received += 1
                    self.counters["blocks_written"] = received
                    self.counters["blocks_done"] = fields["block"] + 1
                    self.counters["bytes_written"] += fields["plain_size"]
                    self._metrics.bytes.labels("restored").inc(fields["plain_size"])
                elif record.name == "RestoreEnd":
                    if fields["error"]:
                        raise SessionError(f"restore {session}: {fields['error']}")
                    if writer is None or received != fields["blocks_sent"]:
                        raise SessionError(
                            f"restore {session}: received {received} of"
                            f" {fields['blocks_sent']} blocks"
                        )
                    await loop.run_in_executor(self._pool, _finish, writer, written)
                    writer = None
                    self.counters["blocks_done"] = self.counters["blocks_total"]
                    return
        finally:
            self._stream.close(session)
            if writer is not None:
                await loop.run_in_executor(self._pool, writer.abort)

    def _write(self, writer: DiskWriter, fields: dict[str, Any]) -> None:
        """Check a block end to end and write it (a thread)."""
        data: bytes = fields["data"]
        if blocks.checksum(data) != unsigned64(fields["checksum"]):
            raise CorruptionError(f"restore block {fields['block']}: checksum mismatch in transit")
        if fields["compressed"]:
            data = blocks.decompress(data, fields["plain_size"])
        if len(data) != fields["plain_size"] or blocks.digest(data, self._key) != fields["digest"]:
            raise CorruptionError(
                f"restore block {fields['block']}: digest mismatch for {fields['digest'].hex()}"
            )
        writer.write_block(fields["block"], data)


def _finish(writer: DiskWriter, written: set[int]) -> None:
    """The blocks not streamed are zero blocks: holes in a file, zeros on a device."""
    for index in range(writer.block_count):
        if index not in written:
            writer.write_zeros(index)
    writer.commit()
