"""Commands over Kafka: the one client every caller uses, and the error codes replies carry.

A command is a Command record on the server's commands topic; its answer is a Reply
(or, for a streamed answer, the server's own records) with the command's id as
correlation id, read from a :class:`~blockferry.transport.mailbox.Mailbox`. A failed
command's Reply names a :class:`ErrorCode`, so a caller (and the REST API, which maps
codes to HTTP statuses) never parses error text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from blockferry.core.errors import (
    BlockferryError,
    ConfigError,
    CorruptionError,
    DestinationError,
    GuestError,
    LockBusy,
    RepositoryFull,
    RepositoryNotFound,
    RestorePointNotFound,
    SessionError,
    SourceError,
    TransportError,
)
from blockferry.transport import expiry
from blockferry.transport.kafka import Record, RecordProducer
from blockferry.transport.mailbox import Mailbox, next_record, reply_result

log = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    """Why a command failed, as its Reply says."""

    NOT_FOUND = "not-found"
    """What the command names does not exist (a restore point, a repository)."""
    CONFLICT = "conflict"
    """The command clashes with work under way (a GC holds the lock): try again later."""
    REFUSED = "refused"
    """The command is wrong (bad arguments, a destination refused, an unknown name)."""
    UNAVAILABLE = "unavailable"
    """The server cannot do it now (a full disk, Kafka away): try again later."""
    INTERNAL = "internal"
    """The server failed (damaged data, a bug): its log says more."""


_CODES: tuple[tuple[type[BaseException], ErrorCode], ...] = (
    (RestorePointNotFound, ErrorCode.NOT_FOUND),
    (RepositoryNotFound, ErrorCode.NOT_FOUND),
    (LockBusy, ErrorCode.CONFLICT),
    (RepositoryFull, ErrorCode.UNAVAILABLE),
    (TransportError, ErrorCode.UNAVAILABLE),
    (CorruptionError, ErrorCode.INTERNAL),
    (ConfigError, ErrorCode.REFUSED),
    (DestinationError, ErrorCode.REFUSED),
    (SourceError, ErrorCode.REFUSED),
    (SessionError, ErrorCode.REFUSED),
    (GuestError, ErrorCode.REFUSED),
)


def code_of(exc: BaseException) -> ErrorCode:
    """The code a command that raised ``exc`` answers with."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return ErrorCode.REFUSED if isinstance(exc, BlockferryError) else ErrorCode.INTERNAL


class RemoteError(BlockferryError):
    """A command failed on its server; ``code`` says how (see :class:`ErrorCode`)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def of(cls, reply: Record) -> RemoteError:
        """The error a failed Reply carries (a Reply of an older server has no code)."""
        try:
            code = ErrorCode(reply.fields.get("code") or ErrorCode.INTERNAL)
        except ValueError:
            code = ErrorCode.INTERNAL
        return cls(code, reply.fields["error"])


class CommandClient:
    """Sends commands and waits for their replies."""

    def __init__(self, producer: RecordProducer) -> None:
        self._producer = producer

    async def send(
        self,
        topic: str,
        name: str,
        arguments: dict[str, Any],
        ttl_s: float,
        command_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Send a command whose answer the caller reads itself (a stream); its id. It is
        refused if read more than ``ttl_s`` seconds from now (see
        :mod:`~blockferry.transport.expiry`). ``key`` (default: the command's id)
        orders commands that share it."""
        command_id = command_id or uuid.uuid4().hex
        await self._producer.send_and_wait(
            topic,
            "Command",
            {
                "command_id": command_id,
                "name": name,
                "arguments": json.dumps(arguments),
                **expiry.stamp(ttl_s),
            },
            key=key or command_id,
        )
        return command_id

    async def call(
        self,
        topic: str,
        replies: Mailbox,
        name: str,
        arguments: dict[str, Any],
        timeout: float,
        what: str,
        key: str | None = None,
        again_when: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Send a command and return its reply's result. Whenever ``again_when()``
        returns first, the command is sent again (with the same id, so the reply to
        either counts), within the same ``timeout``.

        Raises:
            RemoteError: the server answered that the command failed.
            TimeoutError: no answer within ``timeout``; the message names ``what``.
        """
        command_id = uuid.uuid4().hex
        queue = replies.open(command_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                await self.send(topic, name, arguments, deadline - loop.time(), command_id, key)
                reply = asyncio.ensure_future(next_record(queue, deadline - loop.time(), what))
                if again_when is not None:
                    again = asyncio.ensure_future(again_when())
                    try:
                        await asyncio.wait({reply, again}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        again.cancel()
                    if not reply.done():
                        reply.cancel()
                        log.warning("%s: its server restarted; asking it again", what)
                        continue
                record = await reply
                if not record.fields["ok"]:
                    raise RemoteError.of(record)
                return reply_result(record)
        finally:
            replies.close(command_id)
