"""The public events: each session's end and each restore point committed, on topics
of their own for systems outside the mesh (a ticketing system, a CMDB, a report).

Their records are Avro, their schemas ``schemas/SessionEnded.avsc`` and
``schemas/RestorePointCommitted.avsc`` (fields only ever added with a default). They are
written in Avro single-object encoding, as every topic of the mesh, or, with a schema
registry configured, in the registry's wire format, which stock deserializers read.
"""

from __future__ import annotations

import asyncio
import logging

from blockferry.mesh import Mesh
from blockferry.orchestrator.models import Session
from blockferry.repository.ids import format_time
from blockferry.transport import commands as cmd
from blockferry.transport.records import (
    Message,
    RestorePointCommitted,
    RestorePointDisk,
    SessionEnded,
)
from blockferry.transport.registry import RegistrySerializer

log = logging.getLogger(__name__)


def session_ended(session: Session) -> SessionEnded:
    return SessionEnded(
        session_id=session.id,
        kind=session.kind,
        repository=session.repository,
        job=session.job,
        state=session.state,
        created=format_time(session.created),
        finished=format_time(session.finished or session.created),
        seconds=session.seconds,
        restore_point=session.restore_point,
        disks=[task.disk for task in session.tasks],
        failed_disks=[task.disk for task in session.tasks if task.state == "failed"],
        warnings=session.warnings,
        error=session.error,
    )


def restore_point_committed(repository: str, rp: cmd.RestorePointInfo) -> RestorePointCommitted:
    return RestorePointCommitted(
        repository=repository,
        job=rp.job,
        restore_point=rp.id,
        session_id=rp.session_id,
        created=rp.created,
        parent=rp.parent,
        disks=[RestorePointDisk(name=disk.name, size=disk.size) for disk in rp.disks],
    )


class PublicEvents:
    """Writes the public events; a failure to write one is logged, never a session's."""

    def __init__(self, mesh: Mesh, registry_url: str | None) -> None:
        self._mesh = mesh
        self._serialize = None if registry_url is None else RegistrySerializer(registry_url)

    async def session_ended(self, session: Session) -> None:
        await self._publish(self._mesh.topics.session_results, session_ended(session), session.id)

    async def restore_point_committed(self, repository: str, rp: cmd.RestorePointInfo) -> None:
        event = restore_point_committed(repository, rp)
        await self._publish(self._mesh.topics.restore_point_events, event, f"{repository}/{rp.id}")

    async def _publish(self, topic: str, event: Message, key: str) -> None:
        try:
            if self._serialize is None:
                await self._mesh.producer.send_and_wait(topic, event, key=key)
            else:
                value = await asyncio.to_thread(self._serialize, topic, event)
                await self._mesh.producer.send_encoded(topic, value, key)
        except Exception as exc:  # an event not written is logged, never a session's failure
            log.error("publishing %s to %s: %s", type(event).__name__, topic, exc)
