"""Routing records read from a shared topic to whoever waits for them.

Replies, and restore streams, travel on one topic per repository; each waiter
reads only the records whose correlation field names it. The mailbox reads the
topic from its end at start-up, so it sees every record produced after
``start()`` returned: register the waiter, then send the request.
"""

from __future__ import annotations

import asyncio

from blockferry.transport.kafka import Record, RecordConsumer


class Mailbox:
    """Delivers records of ``topic`` to queues keyed by the value of ``field``."""

    def __init__(self, consumer: RecordConsumer, topic: str, field: str) -> None:
        self._consumer = consumer
        self._topic = topic
        self._field = field
        self._queues: dict[str, asyncio.Queue[Record]] = {}

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.assign_all_from_end(self._topic)

    async def stop(self) -> None:
        await self._consumer.stop()

    def open(self, correlation_id: str) -> asyncio.Queue[Record]:
        """Start collecting the records for ``correlation_id``."""
        return self._queues.setdefault(correlation_id, asyncio.Queue())

    def close(self, correlation_id: str) -> None:
        self._queues.pop(correlation_id, None)

    async def run(self) -> None:
        async for batch in self._consumer.batches():
            for record in batch:
                queue = self._queues.get(str(getattr(record.value, self._field, "")))
                if queue is not None:
                    queue.put_nowait(record)


async def next_record(queue: asyncio.Queue[Record], timeout: float, what: str) -> Record:
    """The next record from ``queue``, or TimeoutError naming ``what``."""
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        raise TimeoutError(f"no answer for {what} within {timeout:.0f} s") from None
