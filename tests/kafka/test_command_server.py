"""A command server runs at most its concurrency of commands at once; the next wait in
Kafka until one ends, and then every one is answered. A command delivered twice (a
mirror between sites delivers at least once) runs once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from blockferry.command_server import CommandServer, Handler
from blockferry.mesh import Mesh
from blockferry.settings import CommonSettings, KafkaSettings
from blockferry.transport.commands import CommandSpec, LatestRestorePoint, RestorePointArguments
from blockferry.transport.kafka import ensure_topics
from blockferry.transport.records import Command
from blockferry.transport.topics import TopicSpec

pytestmark = pytest.mark.kafka

HOLD = CommandSpec("hold", RestorePointArguments, LatestRestorePoint)
"""A command of the test's own, with arguments and a result of the mesh's: its label."""


class Holding(CommandServer):
    """Answers ``hold`` once ``release`` is set."""

    def __init__(self, mesh: Mesh, commands: str, replies: str, concurrency: int) -> None:
        expired = Counter("expired", "Commands refused as expired.", registry=CollectorRegistry())
        super().__init__(mesh, "holding", "holding", commands, replies, expired, concurrency)
        self.release = asyncio.Event()
        self.two_started = asyncio.Event()
        self.started: list[str] = []

    def handlers(self) -> list[Handler[Any, Any]]:
        return [Handler(HOLD, self._hold)]

    async def _hold(self, args: RestorePointArguments, _: str) -> LatestRestorePoint:
        self.started.append(args.restore_point)
        if len(self.started) == 2:
            self.two_started.set()
        await self.release.wait()
        return LatestRestorePoint(restore_point=args.restore_point)


async def _serving(bootstrap: str, prefix: str) -> tuple[Mesh, str, str]:
    """A started mesh of a server's role, and its commands and replies topics."""
    mesh = Mesh(
        CommonSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)),
        "target-mover",
    )
    commands, replies = f"{prefix}.commands", f"{prefix}.replies"
    await ensure_topics(bootstrap, [TopicSpec(commands, 1), TopicSpec(replies, 1)])
    await mesh.start()
    return mesh, commands, replies


async def test_commands_beyond_the_concurrency_wait_their_turn(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    mesh, commands, replies = await _serving(kafka_bootstrap, topic_prefix)
    server = Holding(mesh, commands, replies, concurrency=2)
    mailbox = mesh.mailbox("replies", replies, "correlation_id")
    await server.start()
    await mailbox.start()
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.run())
        reading = group.create_task(mailbox.run())
        try:
            calls = [
                group.create_task(
                    mesh.commands.call(
                        commands, mailbox, HOLD, RestorePointArguments(restore_point=n), 60, n
                    )
                )
                for n in ("a", "b", "c")
            ]
            await asyncio.wait_for(server.two_started.wait(), 30)
            await asyncio.sleep(2)
            assert len(server.started) == 2, "the third waits while two run"
            server.release.set()
            answers = await asyncio.gather(*calls)
            assert sorted(a.restore_point or "" for a in answers) == ["a", "b", "c"]
        finally:
            serving.cancel()
            reading.cancel()
    await server.stop()
    await mailbox.stop()
    await mesh.stop()


async def test_a_command_delivered_twice_runs_once(kafka_bootstrap: str, topic_prefix: str) -> None:
    mesh, commands, replies = await _serving(kafka_bootstrap, topic_prefix)
    server = Holding(mesh, commands, replies, concurrency=4)
    server.release.set()
    await server.start()
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.run())
        try:
            command_id = await mesh.commands.send(
                commands, HOLD, RestorePointArguments(restore_point="once"), 60
            )
            sent = [r for r in await _read_all(mesh, commands) if isinstance(r.value, Command)]
            (original,) = sent
            # as a mirror delivers it again after a restart: the same record, once more
            await mesh.producer.send_and_wait(commands, original.value, key=original.key)
            await mesh.commands.send(
                commands, HOLD, RestorePointArguments(restore_point="next"), 60
            )
            await asyncio.wait_for(server.two_started.wait(), 30)
            await asyncio.sleep(1)  # the duplicate came before "next": it had its chance
            assert server.started == ["once", "next"], command_id
        finally:
            serving.cancel()
    await server.stop()
    await mesh.stop()


async def _read_all(mesh: Mesh, topic: str) -> list[Any]:
    consumer = mesh.consumer("reader")
    await consumer.start()
    try:
        await consumer.assign_all_from_start(topic)
        return await consumer.read_to_end()
    finally:
        await consumer.stop()
