"""Commands over Kafka: the one client every caller uses, and the error codes replies carry.

A command is a Command record on the server's commands topic carrying its arguments
(a model of :mod:`~blockferry.transport.commands`); its answer is a Reply carrying the
result's model (or, for a streamed answer, the server's own records) with the command's
id as correlation id, read from a :class:`~blockferry.transport.mailbox.Mailbox`. A
failed command's Reply names a :class:`ErrorCode`, so a caller (and the REST API, which
maps codes to HTTP statuses) never parses error text.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

from blockferry.core.errors import (
    BlockferryError,
    ConfigError,
    CorruptionError,
    DestinationError,
    GuestError,
    LockBusy,
    RecordError,
    RepositoryFull,
    RepositoryNotFound,
    RepositoryUnavailable,
    RestorePointNotFound,
    SessionError,
    SourceError,
    TransportError,
)
from blockferry.transport import expiry
from blockferry.transport.commands import CommandSpec
from blockferry.transport.kafka import RecordProducer
from blockferry.transport.mailbox import Mailbox, next_record
from blockferry.transport.records import Command, Message, Reply

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Message)
R = TypeVar("R", bound=Message)


class ErrorCode(StrEnum):
    """Why a command failed, as its Reply says."""

    NOT_FOUND = "not-found"
    """What the command names does not exist (a restore point, a repository)."""
    CONFLICT = "conflict"
    """The command clashes with work under way (a GC holds the lock): try again later."""
    REFUSED = "refused"
    """The command is wrong (bad arguments, a destination refused, an unknown name)."""
    UNAVAILABLE = "unavailable"
    """The server cannot do it now (a full disk, its storage or Kafka away): try again
    later."""
    INTERNAL = "internal"
    """The server failed (damaged data, a bug): its log says more."""


_CODES: tuple[tuple[type[BaseException], ErrorCode], ...] = (
    (RestorePointNotFound, ErrorCode.NOT_FOUND),
    (RepositoryNotFound, ErrorCode.NOT_FOUND),
    (LockBusy, ErrorCode.CONFLICT),
    (RepositoryFull, ErrorCode.UNAVAILABLE),
    (RepositoryUnavailable, ErrorCode.UNAVAILABLE),
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
    def of(cls, reply: Reply) -> RemoteError:
        """The error a failed Reply carries (a Reply of an older server has no code)."""
        try:
            code = ErrorCode(reply.code or ErrorCode.INTERNAL)
        except ValueError:
            code = ErrorCode.INTERNAL
        return cls(code, reply.error)


class CommandClient:
    """Sends commands and waits for their replies."""

    def __init__(self, producer: RecordProducer) -> None:
        self._producer = producer

    async def send(
        self,
        topic: str,
        spec: CommandSpec[A, Any],
        arguments: A,
        ttl_s: float,
        command_id: str | None = None,
        key: str | None = None,
        epoch: expiry.Epoch | None = None,
    ) -> str:
        """Send a command whose answer the caller reads itself (a stream); its id. It is
        refused if read more than ``ttl_s`` seconds from now, or after a newer ``epoch``
        of its session (see :mod:`~blockferry.transport.expiry`). ``key`` (default: the
        command's id) orders commands that share it."""
        command_id = command_id or uuid.uuid4().hex
        command = Command(
            command_id=command_id,
            name=spec.name,
            arguments=self._producer.codec.encode(arguments),
            **expiry.stamp(ttl_s),
            **(epoch._asdict() if epoch else {}),
        )
        await self._producer.send_and_wait(topic, command, key=key or command_id)
        return command_id

    async def call(
        self,
        topic: str,
        replies: Mailbox,
        spec: CommandSpec[A, R],
        arguments: A,
        timeout: float,
        what: str,
        key: str | None = None,
        again_when: Callable[[], Awaitable[None]] | None = None,
        epoch: expiry.Epoch | None = None,
    ) -> R:
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
                ttl = deadline - loop.time()
                await self.send(topic, spec, arguments, ttl, command_id, key, epoch)
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
                answer = (await reply).value
                if not isinstance(answer, Reply):
                    raise RemoteError(ErrorCode.INTERNAL, f"{what}: answered with {answer!r}")
                if not answer.ok:
                    raise RemoteError.of(answer)
                if spec.result is None:
                    raise TypeError(f"{spec.name} answers with a stream: send it, not call it")
                try:
                    return self._producer.codec.decode_as(answer.result, spec.result)
                except RecordError as exc:
                    raise RemoteError(ErrorCode.INTERNAL, f"{what}: {exc}") from exc
        finally:
            replies.close(command_id)
