"""Running sessions: each disk a leased task on the source movers, side by side; a
backup then commits the disks that succeeded as one restore point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter

from blockferry.core.errors import SessionError
from blockferry.mesh import Mesh
from blockferry.orchestrator.models import ENDED, Session, SessionTask
from blockferry.orchestrator.settings import OrchestratorConfig
from blockferry.repository.ids import new_restore_point_id
from blockferry.transport.mailbox import Mailbox, next_record

log = logging.getLogger(__name__)

CommandSender = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends a command to a repository's owner: (repository, name, arguments) -> result."""


class Sessions:
    """The sessions of this orchestrator, and the running of them."""

    def __init__(
        self,
        mesh: Mesh,
        config: OrchestratorConfig,
        progress: Mailbox,
        command: CommandSender,
        registry: CollectorRegistry,
    ) -> None:
        self._mesh = mesh
        self._config = config
        self._progress = progress
        self._command = command
        self._sessions: dict[str, Session] = {}
        self._changed: dict[str, asyncio.Event] = {}
        """Set (and replaced) whenever a session changes, for long-polling clients."""
        self._ended = Counter(
            "blockferry_orchestrator_sessions_total",
            "Sessions ended, by kind and result.",
            ["kind", "result"],
            registry=registry,
        )
        for kind in ("backup", "restore"):
            for result in ENDED:
                self._ended.labels(kind, result)

    def new(
        self,
        kind: Literal["backup", "restore"],
        repository: str,
        job: str,
        tasks: list[SessionTask],
    ) -> Session:
        session = Session(
            id=uuid.uuid4().hex,
            kind=kind,
            repository=repository,
            job=job,
            created=datetime.now(UTC),
            tasks=tasks,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def all(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: s.created)

    def running(self, repository: str, job: str) -> Session | None:
        """The backup of ``job`` that has not ended yet, if any."""
        for session in self._sessions.values():
            if (session.kind, session.repository, session.job) == ("backup", repository, job):
                if not session.ended:
                    return session
        return None

    async def wait_for_change(self, session: Session, seconds: float) -> None:
        if seconds and not session.ended:
            changed = self._changed.setdefault(session.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), seconds)

    def _notify(self, session: Session) -> None:
        changed = self._changed.pop(session.id, None)
        if changed is not None:
            changed.set()

    # -- running ----------------------------------------------------------------

    async def backup(
        self,
        session: Session,
        compression: str,
        changed_ranges: str = "",
        dirty_bitmaps: dict[str, str] | None = None,
    ) -> None:
        """Back up every disk of ``session``; commit the ones that succeeded.

        Args:
            changed_ranges: a changed-ranges map (JSON) for a session of one disk.
            dirty_bitmaps: disk -> the NBD dirty bitmap to read it by.
        """
        # chosen now, so a dirty bitmap added before a disk is read can carry it
        restore_point = new_restore_point_id(session.created)

        async def run() -> None:
            await self._run_tasks(
                session,
                lambda task: {
                    "compression": compression,
                    "restore_point": restore_point,
                    "parent": task.parent,
                    "changed_ranges": changed_ranges,
                    "dirty_bitmap": (dirty_bitmaps or {}).get(task.disk, ""),
                },
            )
            stored = [task for task in session.tasks if task.state == "success"]
            session.state = "committing"
            self._notify(session)
            parents = sorted(task.parent for task in stored if task.parent)
            rp = await self._command(
                session.repository,
                "commit",
                {
                    "restore_point": restore_point,
                    "session_id": session.id,
                    "job": session.job,
                    "disks": [task.disk for task in stored],
                    "parent": parents[-1] if parents else None,
                    "stats": {
                        t.disk: {**t.counters, "tracking": t.tracking, "parent": t.parent}
                        for t in stored
                    },
                },
            )
            session.restore_point = rp["id"]
            session.result = rp

        await self._run(session, run)

    async def restore(self, session: Session, restore_point: str, force: bool) -> None:
        session.restore_point = restore_point

        async def run() -> None:
            await self._run_tasks(
                session, lambda task: {"restore_point": restore_point, "force": force}
            )

        await self._run(session, run)

    async def _run(self, session: Session, body: Callable[[], Awaitable[None]]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await body()
            failed = [task for task in session.tasks if task.state == "failed"]
            session.state = "warning" if failed else "success"
            if failed:
                session.warnings.append(
                    f"{len(failed)} of {len(session.tasks)} disks failed:"
                    f" {', '.join(task.disk for task in failed)}"
                )
        except Exception as exc:  # a session's failure is its result; others go on
            if not isinstance(exc, SessionError | TimeoutError):
                log.exception("session %s", session.id)
            session.state = "failed"
            session.error = str(exc) or type(exc).__name__
            log.error("%s session %s failed: %s", session.kind, session.id, session.error)
        finally:
            session.finished = datetime.now(UTC)
            session.seconds = asyncio.get_running_loop().time() - started
            self._ended.labels(session.kind, session.state).inc()
            self._notify(session)

    async def _run_tasks(
        self, session: Session, arguments: Callable[[SessionTask], dict[str, Any]]
    ) -> None:
        """Run every task side by side; raise SessionError when none succeeded."""
        session.state = "transferring"
        self._notify(session)
        await asyncio.gather(
            *(self._run_task(session, task, arguments(task)) for task in session.tasks)
        )
        if not any(task.state == "success" for task in session.tasks):
            errors = "; ".join(f"{task.disk}: {task.error}" for task in session.tasks)
            raise SessionError(errors)

    async def _run_task(self, session: Session, task: SessionTask, extra: dict[str, Any]) -> None:
        """Publish a disk's task and follow it, offering it again when its lease expires.
        The task's outcome is recorded in ``task``; nothing is raised."""
        task_id = f"{session.id}/{task.disk}"
        queue = self._progress.open(task_id)
        task.state = "transferring"
        try:
            for attempt in range(self._config.max_attempts):
                task.attempt = attempt
                await self._mesh.producer.send_and_wait(
                    self._mesh.topics.tasks,
                    "Task",
                    {
                        "task_id": task_id,
                        "session_id": session.id,
                        "kind": session.kind,
                        "attempt": attempt,
                        "repository": session.repository,
                        "job": session.job,
                        "disk": task.disk,
                        "path": task.path,
                        "lease_seconds": self._config.lease_seconds,
                        **extra,
                    },
                    key=task_id,
                )
                if await self._follow(session, task, queue):
                    return
            task.state = "failed"
            task.error = f"no mover finished it in {self._config.max_attempts} attempts"
        except Exception as exc:  # one disk's failure does not stop the others
            if not isinstance(exc, SessionError):
                log.exception("task %s", task_id)
            task.state = "failed"
            task.error = str(exc) or type(exc).__name__
        finally:
            self._progress.close(task_id)
            if task.state == "failed":
                log.error("task %s failed: %s", task_id, task.error)
            self._notify(session)

    async def _follow(self, session: Session, task: SessionTask, queue: asyncio.Queue[Any]) -> bool:
        """Follow one offer of a task: True once it ended (see ``task.state``), False when
        its lease expired."""
        task_id = f"{session.id}/{task.disk}"
        while True:
            try:
                record = await next_record(queue, self._config.lease_seconds, task_id)
            except TimeoutError:
                log.warning("task %s: lease expired; offering it again", task_id)
                return False
            progress = record.fields
            task.blocks_total = progress["blocks_total"]
            task.blocks_done = progress["blocks_done"]
            task.counters = progress["counters"]
            self._notify(session)
            if progress["state"] == "done":
                task.tracking = progress["tracking"]
                task.warnings = progress["warnings"]
                task.state = "success"
                return True
            if progress["state"] == "failed":
                task.state = "failed"
                task.error = progress["message"]
                return True
