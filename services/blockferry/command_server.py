"""Serving commands that arrive on a topic and are answered on another: the repository
owner's commands and the guest-proxy's share this.

A command is committed before it is handled (at most once: a command whose handler died
is not run again by another instance; its sender times out and decides), handled in a
task of its own by the handler the server registers for its
:class:`~blockferry.transport.commands.CommandSpec` (:meth:`handlers`; any other name is
refused, so no other method can be called from the bus), and answered with a Reply
carrying its id and the result's model. Arguments are decoded once, here: arguments of
another type than the spec's are refused. A handler of a spec without a result answers
by itself (a restore streams its data instead). A failed command's Reply carries an
:class:`~blockferry.transport.rpc.ErrorCode` and a message without the server's paths.
At most ``concurrency`` commands run at once; the next wait in Kafka (the consumer
pauses its partitions and goes on polling, so it stays in its group). A command whose id
was seen already is a duplicate (MirrorMaker 2 delivers at least once between sites)
and is not run again: the server remembers the last :data:`SEEN_COMMANDS` ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from blockferry import log_context
from blockferry.core.errors import BlockferryError, RecordError
from blockferry.mesh import Mesh
from blockferry.transport import expiry
from blockferry.transport.commands import CommandSpec
from blockferry.transport.records import Command, Message, Reply
from blockferry.transport.rpc import ErrorCode, code_of

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Message)
R = TypeVar("R", bound=Message)

SEEN_COMMANDS = 10_000
"""Command ids remembered to drop duplicates: far more than are sent in a command's
lifetime (its expiry)."""


@dataclass(frozen=True)
class Handler(Generic[A, R]):
    """Runs one command: ``run(arguments, command_id)`` returns the spec's result (None
    for a spec without one: the handler answered by itself)."""

    spec: CommandSpec[A, R]
    run: Callable[[A, str], Awaitable[R | None]]


DEFAULT_CONCURRENCY = 16


class CommandServer:
    """Consumes ``commands_topic`` in consumer group ``group``; replies on ``replies_topic``."""

    def __init__(
        self,
        mesh: Mesh,
        name: str,
        group: str,
        commands_topic: str,
        replies_topic: str,
        refused: Callable[[str], None],
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._mesh = mesh
        self._consumer = mesh.consumer(name, group=group)
        self._commands_topic = commands_topic
        self._replies_topic = replies_topic
        self._refused = refused
        self._fence = expiry.Fence()
        self._concurrency = concurrency
        self._running = 0
        self._seen: OrderedDict[str, None] = OrderedDict()

    def handlers(self) -> list[Handler[Any, Any]]:
        """The commands this server answers: the only ones it runs."""
        raise NotImplementedError

    def public(self, message: str) -> str:
        """``message`` as a reply may carry it: without what only the server should see
        (its paths). The message as it was goes to the server's log."""
        return message

    async def start(self) -> None:
        await self._consumer.start([self._commands_topic])

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            async for batch in self._consumer.batches(timeout_ms=200, max_records=1):
                for record in batch:
                    await self._consumer.commit({record.source: record.offset + 1})
                    if isinstance(record.value, Command) and self._first(record.value):
                        self._running += 1
                        group.create_task(self._handle(record.value))
                assigned = self._consumer.assignment()
                if self._running >= self._concurrency:
                    self._consumer.pause(assigned)
                else:
                    self._consumer.resume(assigned)

    def _first(self, command: Command) -> bool:
        """Whether ``command`` is seen for the first time (else it is a duplicate)."""
        if command.command_id in self._seen:
            log.info(
                "command %s (%s): a duplicate, not run again", command.name, command.command_id
            )
            return False
        self._seen[command.command_id] = None
        if len(self._seen) > SEEN_COMMANDS:
            self._seen.popitem(last=False)
        return True

    async def _handle(self, command: Command) -> None:
        try:
            with log_context.about(session=command.session_id):
                await self._answer(command)
        finally:
            self._running -= 1

    async def _answer(self, command: Command) -> None:
        name = command.name
        for reason, stale in (
            ("expired", expiry.refusal(command, self._mesh.settings.kafka.clock_skew_s)),
            ("superseded", self._fence.refusal(command.session_id, command.epoch)),
        ):
            if stale:
                log.warning("command %s (%s): %s", name, command.command_id, stale)
                self._refused(reason)
                await self._reply(command, ErrorCode.REFUSED, error=f"{name}: {stale}")
                return
        try:
            handlers = {handler.spec.name: handler for handler in self.handlers()}
            handler = handlers.get(name)
            if handler is None:
                known = ", ".join(sorted(handlers))
                raise BlockferryError(f"unknown command {name!r}; this server answers {known}")
            try:
                arguments = self._mesh.codec.decode_as(command.arguments, handler.spec.arguments)
            except RecordError as exc:
                raise BlockferryError(f"arguments refused: {exc}") from exc
            result = await handler.run(arguments, command.command_id)
        except Exception as exc:  # a command's failure is answered; it never stops the server
            if isinstance(exc, BlockferryError | OSError):
                log.error("command %s failed: %s", name, exc)
            else:
                log.exception("command %s failed", name)
            await self._reply(command, code_of(exc), error=self.public(f"{name}: {exc}"))
            return
        if result is not None:
            await self._reply(command, result=result)

    async def _reply(
        self,
        command: Command,
        code: ErrorCode | None = None,
        error: str = "",
        result: Message | None = None,
    ) -> None:
        reply = Reply(
            correlation_id=command.command_id,
            name=command.name,
            ok=code is None,
            code=code or "",
            error=error,
            result=b"" if result is None else self._mesh.codec.encode(result),
        )
        await self._mesh.producer.send_and_wait(self._replies_topic, reply, key=command.command_id)
