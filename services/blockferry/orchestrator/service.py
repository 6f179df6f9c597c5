"""The orchestrator role (minimal): accepts backup, restore and verify requests over
HTTP, publishes leased disk tasks, offers a task again when its lease expires,
commands the restore point's commit and reports each session's result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from prometheus_client import CollectorRegistry, Counter

from blockferry import api_token
from blockferry.core.errors import SessionError
from blockferry.mesh import Mesh, RepositoryDirectory
from blockferry.orchestrator.auth import bearer_token
from blockferry.orchestrator.models import BackupRequest, RestoreRequest, Session, VerifyRequest
from blockferry.orchestrator.settings import OrchestratorSettings
from blockferry.repository.ids import new_restore_point_id
from blockferry.transport.mailbox import Mailbox, next_record, reply_result

log = logging.getLogger(__name__)


class Orchestrator:
    name = "orchestrator"

    def __init__(self, settings: OrchestratorSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._config = settings.orchestrator
        self._token = api_token.load_or_create(
            self._config.api_token_file or api_token.default_path(settings.data_dir)
        )
        self._mesh = Mesh(settings, self.name)
        self._directory = RepositoryDirectory(self._mesh)
        self._progress = self._mesh.mailbox("progress", self._mesh.topics.task_progress, "task_id")
        self._replies: dict[str, Mailbox] = {}
        self._replies_lock = asyncio.Lock()
        self._sessions: dict[str, Session] = {}
        self._changed: dict[str, asyncio.Event] = {}
        """Set (and replaced) whenever a session changes, for long-polling clients."""
        self._group: asyncio.TaskGroup | None = None
        self._sessions_total = Counter(
            "blockferry_orchestrator_sessions_total",
            "Sessions ended, by kind and result.",
            ["kind", "result"],
            registry=registry,
        )
        for kind in ("backup", "restore"):
            for result in ("success", "failed"):
                self._sessions_total.labels(kind, result)
        self.ready = False

    async def start(self) -> None:
        await self._mesh.start()
        await self._directory.start()
        await self._progress.start()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._directory.run())
            group.create_task(self._progress.run())
            self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for mailbox in self._replies.values():
            await mailbox.stop()
        await self._progress.stop()
        await self._directory.stop()
        await self._mesh.stop()

    # -- the API ----------------------------------------------------------------

    def routes(self, app: FastAPI) -> None:
        api = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer_token(self._token))])

        @api.get("/repositories")
        async def repositories() -> list[str]:
            return self._directory.names

        @api.post("/backups", status_code=202)
        async def backup(request: BackupRequest) -> Session:
            await self._known_repository(request.repository)
            parent = None
            if not request.full:
                latest = await self._command(
                    request.repository,
                    "latest-restore-point",
                    {"job": request.job, "disk": request.disk},
                )
                parent = latest["restore_point"]
            session = self._new_session(
                "backup", request.repository, request.job, request.disk, request.source
            )
            session.parent = parent
            ranges = "" if request.changed_ranges is None else json.dumps(request.changed_ranges)
            self._spawn(
                self._backup(session, request.compression, ranges, request.dirty_bitmap or "")
            )
            return session

        @api.post("/restores", status_code=202)
        async def restore(request: RestoreRequest) -> Session:
            await self._known_repository(request.repository)
            rp = await self._command(
                request.repository, "restore-point", {"restore_point": request.restore_point}
            )
            disks = [d["name"] for d in rp["disks"]]
            disk = request.disk or (disks[0] if len(disks) == 1 else None)
            if disk is None or disk not in disks:
                raise HTTPException(422, f"name one disk of the restore point: {', '.join(disks)}")
            session = self._new_session(
                "restore", request.repository, rp["job"], disk, request.destination
            )
            session.restore_point = request.restore_point
            self._spawn(self._restore(session, request.force))
            return session

        @api.post("/verify")
        async def verify(request: VerifyRequest) -> dict[str, Any]:
            await self._known_repository(request.repository)
            args = {"restore_point": request.restore_point}
            return await self._command(
                request.repository, "verify", args, self._config.verify_timeout_s
            )

        @api.get("/sessions")
        async def sessions() -> list[Session]:
            return sorted(self._sessions.values(), key=lambda s: s.created)

        @api.get("/sessions/{session_id}")
        async def session(
            session_id: str,
            wait_s: Annotated[
                float, Query(ge=0, le=60, description="Wait this long for a change first.")
            ] = 0.0,
        ) -> Session:
            found = self._sessions.get(session_id)
            if found is None:
                raise HTTPException(404, f"no session {session_id}")
            if wait_s and not found.ended:
                changed = self._changed.setdefault(session_id, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait_s)
            return found

        @api.get("/restore-points")
        async def restore_points(
            repository: str = "default", job: str | None = None
        ) -> list[dict[str, Any]]:
            await self._known_repository(repository)
            result = await self._command(repository, "list-restore-points", {"job": job})
            points: list[dict[str, Any]] = result["restore_points"]
            return points

        app.include_router(api)

    async def _known_repository(self, name: str) -> dict[str, Any]:
        info = await self._directory.get(name, timeout=5.0)
        if info is None:
            raise HTTPException(404, f"repository {name!r} is not served by any target mover")
        return info

    # -- sessions ---------------------------------------------------------------

    def _new_session(
        self, kind: Literal["backup", "restore"], repo: str, job: str, disk: str, path: str
    ) -> Session:
        session = Session(
            id=uuid.uuid4().hex,
            kind=kind,
            repository=repo,
            job=job,
            disk=disk,
            path=path,
            created=datetime.now(UTC),
        )
        self._sessions[session.id] = session
        return session

    def _notify(self, session: Session) -> None:
        changed = self._changed.pop(session.id, None)
        if changed is not None:
            changed.set()

    def _spawn(self, coroutine: Any) -> None:
        assert self._group is not None
        self._group.create_task(coroutine)

    async def _backup(
        self, session: Session, compression: str, changed_ranges: str, dirty_bitmap: str
    ) -> None:
        # chosen now, so a dirty bitmap added before the disk is read can carry it
        restore_point = new_restore_point_id(session.created)

        async def commit() -> None:
            session.state = "committing"
            rp = await self._command(
                session.repository,
                "commit",
                {
                    "restore_point": restore_point,
                    "session_id": session.id,
                    "job": session.job,
                    "disks": [session.disk],
                    "parent": session.parent,
                    "stats": {session.disk: {**session.counters, "tracking": session.tracking}},
                },
            )
            session.restore_point = rp["id"]
            session.result = rp

        await self._run_session(
            session,
            {
                "compression": compression,
                "restore_point": restore_point,
                "parent": session.parent,
                "changed_ranges": changed_ranges,
                "dirty_bitmap": dirty_bitmap,
            },
            commit,
        )

    async def _restore(self, session: Session, force: bool) -> None:
        await self._run_session(
            session, {"restore_point": session.restore_point, "force": force}, None
        )

    async def _run_session(self, session: Session, extra: dict[str, Any], then: Any) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await self._run_task(session, extra)
            if then is not None:
                await then()
            session.state = "success"
        except Exception as exc:  # a session's failure is its result; others go on
            if not isinstance(exc, SessionError | TimeoutError | HTTPException):
                log.exception("session %s", session.id)
            session.state = "failed"
            session.error = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            log.error(
                "session %s (%s of %s) failed: %s",
                session.id,
                session.kind,
                session.disk,
                session.error,
            )
        finally:
            session.finished = datetime.now(UTC)
            session.seconds = asyncio.get_running_loop().time() - started
            self._sessions_total.labels(session.kind, session.state).inc()
            self._notify(session)

    async def _run_task(self, session: Session, extra: dict[str, Any]) -> None:
        """Publish the session's disk task and follow it, offering it again when its lease
        expires; raises SessionError when it fails or runs out of attempts."""
        task_id = f"{session.id}/{session.disk}"
        queue = self._progress.open(task_id)
        session.state = "transferring"
        try:
            for attempt in range(self._config.max_attempts):
                session.attempt = attempt
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
                        "disk": session.disk,
                        "path": session.path,
                        "lease_seconds": self._config.lease_seconds,
                        **extra,
                    },
                    key=task_id,
                )
                while True:
                    try:
                        record = await next_record(queue, self._config.lease_seconds, task_id)
                    except TimeoutError:
                        log.warning("task %s: lease expired; offering it again", task_id)
                        break
                    progress = record.fields
                    session.blocks_total = progress["blocks_total"]
                    session.blocks_done = progress["blocks_done"]
                    session.counters = progress["counters"]
                    self._notify(session)
                    if progress["state"] == "done":
                        session.tracking = progress["tracking"]
                        session.warnings = progress["warnings"]
                        return
                    if progress["state"] == "failed":
                        raise SessionError(progress["message"])
            raise SessionError(
                f"task {task_id}: no mover finished it in {self._config.max_attempts} attempts"
            )
        finally:
            self._progress.close(task_id)

    async def _command(
        self, repo: str, name: str, arguments: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a command to the repository's owner and return its reply's result."""
        replies = await self._replies_mailbox(repo)
        command_id = uuid.uuid4().hex
        queue = replies.open(command_id)
        try:
            await self._mesh.producer.send_and_wait(
                self._mesh.topics.commands(repo),
                "Command",
                {
                    "command_id": command_id,
                    "name": name,
                    "arguments": json.dumps(arguments),
                },
                key=command_id,
            )
            reply = await next_record(
                queue, timeout or self._config.command_timeout_s, f"{name} on repository {repo}"
            )
        except TimeoutError as exc:
            raise HTTPException(504, str(exc)) from exc
        finally:
            replies.close(command_id)
        if not reply.fields["ok"]:
            status = 404 if "not found" in reply.fields["error"].lower() else 422
            raise HTTPException(status, reply.fields["error"])
        return reply_result(reply)

    async def _replies_mailbox(self, repo: str) -> Mailbox:
        async with self._replies_lock:
            mailbox = self._replies.get(repo)
            if mailbox is None:
                mailbox = self._mesh.mailbox(
                    f"replies-{repo}", self._mesh.topics.replies(repo), "correlation_id"
                )
                await mailbox.start()
                self._spawn(mailbox.run())
                self._replies[repo] = mailbox
            return mailbox
