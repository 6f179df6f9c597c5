"""The orchestrator role: jobs, sessions and the REST API. It publishes leased disk
tasks, offers a task again when its lease expires, commands the restore point's commit
and reports each session's result; repository work goes to the repository's owner."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from prometheus_client import CollectorRegistry

from blockferry import api_token
from blockferry.core.errors import ConfigError, DestinationError, GuestError, SessionError
from blockferry.core.restore_point_uri import restore_point_uri
from blockferry.mesh import Mesh, RepositoryDirectory
from blockferry.orchestrator.audit import AuditLog
from blockferry.orchestrator.auth import ADMIN, OPERATOR, authenticated
from blockferry.orchestrator.in_place_api import in_place_routes
from blockferry.orchestrator.job_store import JobConflict, JobStore
from blockferry.orchestrator.jobs import Job, JobView, PruneRequest, Retention
from blockferry.orchestrator.metrics import OrchestratorMetrics
from blockferry.orchestrator.models import (
    NAME,
    BackupRequest,
    CopyRequest,
    GcRequest,
    RestoreRequest,
    Session,
    SessionTask,
    VerifyRequest,
)
from blockferry.orchestrator.public_events import PublicEvents
from blockferry.orchestrator.scheduler import Scheduler
from blockferry.orchestrator.sessions import Sessions
from blockferry.orchestrator.settings import OrchestratorSettings
from blockferry.orchestrator.state import GuestPlan
from blockferry.orchestrator.users import ApiUser, NewUser, NewUserToken, UserExists, Users
from blockferry.repository.ids import parse_time, utc_now
from blockferry.restore_target import check_named_within
from blockferry.transport import commands as cmd
from blockferry.transport.commands import CommandSpec
from blockferry.transport.expiry import Epoch
from blockferry.transport.kafka_watch import KafkaWatch
from blockferry.transport.link import LinkWatch
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.records import Message, RepositoryInfo
from blockferry.transport.rpc import ErrorCode, RemoteError

log = logging.getLogger(__name__)

JobName = Annotated[str, Query(pattern=NAME)]

A = TypeVar("A", bound=Message)
R = TypeVar("R", bound=Message)

HTTP_STATUS = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.REFUSED: 400,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
"""The API's answer to a repository command that failed, by the reply's code."""


class Orchestrator:
    name = "orchestrator"

    def __init__(self, settings: OrchestratorSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._config = settings.orchestrator
        admin_token = api_token.load_or_create(
            self._config.api_token_file or api_token.default_path(settings.data_dir)
        )
        self._users = Users(
            self._config.api_users_file or settings.data_dir / "api-users.json", admin_token
        )
        self._mesh = Mesh(settings, self.name)
        self._directory = RepositoryDirectory(self._mesh)
        self._jobs = JobStore(self._mesh, self._config.jobs_file)
        self._progress = self._mesh.mailbox("progress", self._mesh.topics.task_progress, "task_id")
        self._guest_events = self._mesh.mailbox(
            "guest-events", self._mesh.topics.guest_events, "correlation_id"
        )
        metrics = OrchestratorMetrics(registry)
        self._sessions = Sessions(
            self._mesh,
            self._config,
            self._progress,
            self._session_command,
            self._guest_command,
            metrics,
            PublicEvents(self._mesh, self._config.events_schema_registry_url),
        )
        self._replies: dict[str, Mailbox] = {}
        self._replies_lock = asyncio.Lock()
        self._scheduler = Scheduler(self._jobs, self._sessions, self._start_scheduled, metrics)
        self._link = LinkWatch(self._mesh.bootstrap, self._mesh.security, registry)
        self._kafka_watch = KafkaWatch(
            self._mesh.bootstrap,
            self._mesh.security,
            self._mesh.topics.prefix,
            self._mesh.topics.dead_letter,
            registry,
        )
        self._unfinished: list[Session] = []
        self._group: asyncio.TaskGroup | None = None
        self.ready = False

    async def start(self) -> None:
        await self._mesh.start()
        await self._directory.start()
        await self._progress.start()
        await self._guest_events.start()
        await self._jobs.start()
        self._unfinished = await self._sessions.load()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._directory.run())
            group.create_task(self._progress.run())
            group.create_task(self._guest_events.run())
            group.create_task(self._jobs.run())
            group.create_task(self._scheduler.run())
            group.create_task(self._link.run())
            group.create_task(self._kafka_watch.run())
            for session in self._unfinished:
                log.info("carrying on %s session %s of %s", session.kind, session.id, session.job)
                group.create_task(self._sessions.carry_on(session))
            self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for mailbox in self._replies.values():
            await mailbox.stop()
        await self._jobs.stop()
        await self._guest_events.stop()
        await self._progress.stop()
        await self._directory.stop()
        await self._mesh.stop()

    # -- the API ----------------------------------------------------------------

    def _with_waiting(self, session: Session) -> Session:
        """``session`` saying what it waits for, now (a backup or a restore crosses the
        link to the other site where there is one)."""
        session.set_waiting(self._link.waiting())
        return session

    def routes(self, app: FastAPI) -> None:
        app.add_middleware(
            AuditLog, path=self._config.audit_log_file or self._settings.data_dir / "audit.log"
        )
        api = APIRouter(prefix="/api/v1", dependencies=[Depends(authenticated(self._users))])

        @api.get("/repositories")
        async def repositories() -> list[str]:
            return self._directory.names

        @api.post("/backups", status_code=202, dependencies=OPERATOR)
        async def backup(request: BackupRequest) -> Session:
            """Back up one disk, outside any job's definition."""
            await self._known_repository(request.repository)
            task = SessionTask(disk=request.disk, path=request.source)
            if not request.full:
                task.parent = await self._latest(request.repository, request.job, request.disk)
            generation = await self._generation(request.repository)
            session = self._sessions.new(
                "backup", request.repository, request.job, [task], generation
            )
            ranges = request.changed_ranges_map()
            bitmaps = {request.disk: request.dirty_bitmap} if request.dirty_bitmap else {}
            self._spawn(self._sessions.backup(session, request.compression, ranges, bitmaps))
            return session

        @api.post("/copies", status_code=202, dependencies=OPERATOR)
        async def copy(request: CopyRequest) -> Session:
            """Copy a restore point to another repository as a restore point of the same
            job there: only the chunks missing there are sent, and the copy restores on
            its own. Incremental on the job's newest restore point there."""
            if request.to == request.repository:
                raise HTTPException(400, f"a copy goes to another repository than {request.to}")
            await self._known_repository(request.repository)
            await self._known_repository(request.to)
            rp = await self._command(
                request.repository,
                cmd.RESTORE_POINT,
                cmd.RestorePointArguments(restore_point=request.restore_point),
            )
            if rp.id in {point.id for point in await self._restore_points(request.to, rp.job)}:
                raise HTTPException(409, f"{rp.id} is in {request.to} already")
            session = await self._new_copy(request.repository, rp, request.to, request.full)
            self._spawn(self._sessions.backup(session, request.compression, copy_of=rp))
            return session

        @api.post("/restores", status_code=202, dependencies=OPERATOR)
        async def restore(request: RestoreRequest) -> Session:
            """Restore a disk to a file or block device under a restore root."""
            try:
                check_named_within(request.destination, self._settings.restore_root_dirs())
            except DestinationError as exc:
                raise HTTPException(400, str(exc)) from exc
            await self._known_repository(request.repository)
            rp = await self._command(
                request.repository,
                cmd.RESTORE_POINT,
                cmd.RestorePointArguments(restore_point=request.restore_point),
            )
            disks = [d.name for d in rp.disks]
            disk = request.disk or (disks[0] if len(disks) == 1 else None)
            if disk is None or disk not in disks:
                raise HTTPException(400, f"name one disk of the restore point: {', '.join(disks)}")
            task = SessionTask(disk=disk, path=request.destination)
            session = self._sessions.new("restore", request.repository, rp.job, [task])
            self._spawn(
                self._sessions.restore(
                    session, request.restore_point, request.force, request.allow_holes
                )
            )
            return session

        @api.post("/verify", dependencies=OPERATOR)
        async def verify(request: VerifyRequest) -> cmd.VerifyReport:
            await self._known_repository(request.repository)
            args = cmd.VerifyArguments(restore_point=request.restore_point)
            return await self._command(
                request.repository, cmd.VERIFY, args, self._config.verify_timeout_s
            )

        @api.get("/sessions")
        async def sessions(job: JobName | None = None) -> list[Session]:
            return [
                self._with_waiting(s) for s in self._sessions.all() if job is None or s.job == job
            ]

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
            await self._sessions.wait_for_change(found, wait_s)
            return self._with_waiting(found)

        @api.post("/sessions/{session_id}/cancel", status_code=202, dependencies=OPERATOR)
        async def cancel_session(session_id: str) -> Session:
            """Cancel a session: its tasks stop, nothing is committed, its guests are
            thawed and its snapshots deleted. The session ends as ``cancelled``."""
            found = self._sessions.get(session_id)
            if found is None:
                raise HTTPException(404, f"no session {session_id}")
            return await self._cancel(found)

        @api.get("/restore-points")
        async def restore_points(
            repository: str = "default", job: str | None = None
        ) -> list[cmd.RestorePointInfo]:
            await self._known_repository(repository)
            return await self._restore_points(repository, job)

        self._job_routes(api)
        self._user_routes(api)
        in_place_routes(api, self._command, self._known_repository, self._config.verify_timeout_s)
        app.include_router(api)

    def _user_routes(self, api: APIRouter) -> None:
        @api.get("/users", dependencies=ADMIN)
        async def users() -> list[ApiUser]:
            return self._users.all()

        @api.post("/users", status_code=201, dependencies=ADMIN)
        async def add_user(request: NewUser) -> NewUserToken:
            """Add a user; the answer carries its token, shown this once."""
            try:
                token = await asyncio.to_thread(self._users.add, request.name, request.role)
            except UserExists as exc:
                raise HTTPException(409, str(exc)) from exc
            return NewUserToken(name=request.name, role=request.role, token=token)

        @api.delete("/users/{name}", status_code=204, dependencies=ADMIN)
        async def remove_user(name: str) -> Response:
            """Remove a user: its token stops working at once."""
            try:
                removed = await asyncio.to_thread(self._users.remove, name)
            except ConfigError as exc:
                raise HTTPException(400, str(exc)) from exc
            if not removed:
                raise HTTPException(404, f"no user {name}")
            return Response(status_code=204)

    def _job_routes(self, api: APIRouter) -> None:
        @api.get("/jobs")
        async def jobs() -> list[JobView]:
            return [self._view(job, origin) for job, origin in self._jobs.all()]

        @api.get("/jobs/{name}")
        async def job(name: str) -> JobView:
            return self._view(*self._job(name))

        @api.post("/jobs", status_code=201, dependencies=ADMIN)
        async def create_job(definition: Job) -> JobView:
            await self._write_job(definition, create=True)
            return self._view(definition, "api")

        @api.put("/jobs/{name}", dependencies=ADMIN)
        async def replace_job(name: str, definition: Job) -> JobView:
            if definition.name != name:
                raise HTTPException(400, f"the job's name {definition.name!r} is not {name!r}")
            await self._write_job(definition, create=False)
            return self._view(definition, "api")

        @api.delete("/jobs/{name}", status_code=204, dependencies=ADMIN)
        async def delete_job(name: str) -> Response:
            try:
                deleted = await self._jobs.delete(name)
            except JobConflict as exc:
                raise HTTPException(409, str(exc)) from exc
            if not deleted:
                raise HTTPException(404, f"no job {name}")
            return Response(status_code=204)

        @api.post("/prune", dependencies=ADMIN)
        async def prune(request: PruneRequest) -> cmd.PruneResult:
            """Remove the restore points of a job that a retention policy does not keep
            (the newest of each disk always stays); their chunks go at the next GC."""
            retention = request.retention
            if retention is None:
                found = self._jobs.get(request.job)
                retention = found[0].retention if found else None
                if retention is None:
                    raise HTTPException(
                        400, f"job {request.job} has no retention policy: give one to apply"
                    )
            await self._known_repository(request.repository)
            return await self._prune(request.repository, request.job, retention, request.dry_run)

        @api.post("/gc", dependencies=ADMIN)
        async def gc(request: GcRequest) -> cmd.GcResult:
            """Garbage collection on the repository's owner: deletes the chunks no restore
            point references, keeping whatever a running backup may still reference."""
            await self._known_repository(request.repository)
            args = cmd.GcArguments(
                keep_since=self._sessions.oldest_running_generation(request.repository),
                dry_run=request.dry_run,
            )
            timeout = self._config.verify_timeout_s
            return await self._command(request.repository, cmd.GC, args, timeout)

        @api.post("/jobs/{name}/start", status_code=202, dependencies=OPERATOR)
        async def start_job(name: str, full: bool = False) -> Session:
            """Run a job now: one session, its disks side by side, one restore point."""
            definition, _ = self._job(name)
            return await self._start_job(definition, full)

        @api.post("/jobs/{name}/stop", status_code=202, dependencies=OPERATOR)
        async def stop_job(name: str) -> Session:
            """Stop a job's running session: it is cancelled, nothing of it is committed."""
            definition, _ = self._job(name)
            running = self._sessions.running(*definition.stored_as)
            if running is None:
                raise HTTPException(409, f"job {name} is not running")
            return await self._cancel(running)

    async def _cancel(self, session: Session) -> Session:
        if session.ended:
            raise HTTPException(409, f"session {session.id} has ended ({session.state})")
        if session.state == "committing":
            raise HTTPException(
                409, f"session {session.id} is committing its restore point: too late to cancel"
            )
        await self._sessions.cancel(session)
        return session

    async def _prune(
        self, repository: str, job: str, retention: Retention, dry_run: bool
    ) -> cmd.PruneResult:
        policy = cmd.RetentionPolicy.model_validate(retention.model_dump())
        return await self._command(
            repository, cmd.PRUNE, cmd.PruneArguments(job=job, policy=policy, dry_run=dry_run)
        )

    async def _run_job(self, job: Job, session: Session) -> None:
        """A job's session, then its retention policy."""
        guest = None
        if job.guest_processing is not None:
            access = {vm.name: vm.guest for vm in job.vms if vm.guest}
            guest = GuestPlan(processing=job.guest_processing, access=access)
        await self._sessions.backup(
            session,
            job.compression,
            dirty_bitmaps={name: d.dirty_bitmap for name, d in job.disks() if d.dirty_bitmap},
            guest=guest,
            snapshot=job.snapshot,
        )
        if session.state not in ("success", "warning"):
            return
        if job.catalog and session.restore_point:
            await self._catalog(job.repository, session.restore_point)
        await self._apply_retention(job, session)
        await self._after_source(job)

    async def _catalog(self, repository: str, rp_id: str) -> None:
        """Build a restore point's file catalog; a failure is logged (the backup stands,
        and `POST /restore-points/{id}/catalog` builds it again)."""
        try:
            built = await self._command(
                repository,
                cmd.BUILD_CATALOG,
                cmd.CatalogArguments(restore_point=rp_id),
                self._config.verify_timeout_s,
            )
        except HTTPException as exc:
            log.warning("the file catalog of %s was not built: %s", rp_id, exc.detail)
        else:
            log.info("file catalog of %s: %d entries", rp_id, built.entries)

    async def _apply_retention(self, job: Job, session: Session) -> None:
        """``job``'s retention policy after its ``session`` stored a restore point."""
        if job.retention is None:
            return
        try:
            session.pruned = await self._prune(*job.stored_as, job.retention, dry_run=False)
        except HTTPException as exc:
            session.warnings.append(f"retention was not applied: {exc.detail}")
        await self._sessions.save(session)

    async def _start_scheduled(self, job: Job, due: datetime) -> None:
        try:
            await self._start_job(job, full=False, scheduled_for=due)
        except HTTPException as exc:
            raise SessionError(str(exc.detail)) from exc

    def _job(self, name: str) -> tuple[Job, str]:
        found = self._jobs.get(name)
        if found is None:
            raise HTTPException(404, f"no job {name}")
        return found

    def _view(self, job: Job, origin: str) -> JobView:
        running = self._sessions.running(*job.stored_as)
        next_run = job.schedule.next_run(utc_now()) if job.schedule and job.enabled else None
        return JobView(
            job=job, origin=origin, next_run=next_run, running=running.id if running else None
        )

    async def _write_job(self, job: Job, create: bool) -> None:
        try:
            await self._jobs.put(job, create)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from exc

    async def _start_job(
        self, job: Job, full: bool, scheduled_for: datetime | None = None
    ) -> Session:
        running = self._sessions.running(*job.stored_as)
        if running is not None:
            raise HTTPException(409, f"job {job.name} is running already (session {running.id})")
        await self._known_repository(job.repository)
        if job.copy_from is not None:
            session, missing = await self._start_copies(job, full)
            session.scheduled_for = scheduled_for
            self._spawn(self._run_copies(job, session, missing))
            return session
        tasks = []
        for disk_name, disk in job.disks():
            parent = None if full else await self._latest(job.repository, job.name, disk_name)
            tasks.append(SessionTask(disk=disk_name, path=disk.source, parent=parent))
        generation = await self._generation(job.repository)
        session = self._sessions.new("backup", job.repository, job.name, tasks, generation)
        session.scheduled_for = scheduled_for
        self._spawn(self._run_job(job, session))
        return session

    # -- copies -------------------------------------------------------------------

    async def _new_copy(
        self, repository: str, rp: cmd.RestorePointInfo, to: str, full: bool
    ) -> Session:
        """A copy session of ``rp`` (in ``repository``) into ``to``, incremental on the
        newest restore point of its job there unless ``full``."""
        running = self._sessions.running(to, rp.job)
        if running is not None:
            raise HTTPException(
                409, f"job {rp.job} is running into {to} already (session {running.id})"
            )
        tasks = []
        for disk in rp.disks:
            uri = restore_point_uri(repository, rp.id, disk.name)
            parent = None if full else await self._latest(to, rp.job, disk.name)
            tasks.append(SessionTask(disk=disk.name, path=uri, parent=parent))
        generation = await self._generation(to)
        return self._sessions.new("copy", to, rp.job, tasks, generation)

    async def _restore_points(self, repository: str, job: str | None) -> list[cmd.RestorePointInfo]:
        """The restore points of ``job`` (None: of every job) in ``repository``, oldest
        first."""
        args = cmd.ListRestorePointsArguments(job=job)
        return (await self._command(repository, cmd.LIST_RESTORE_POINTS, args)).restore_points

    async def _start_copies(
        self, job: Job, full: bool
    ) -> tuple[Session, list[cmd.RestorePointInfo]]:
        """A copy job's first session, and every restore point it is to copy: those of
        its source job newer than the newest there (so none its retention removed there
        comes back), oldest first."""
        source = job.copy_from
        assert source is not None
        await self._known_repository(source.repository)
        there = await self._restore_points(job.repository, source.job)
        since = max((parse_time(rp.created) for rp in there), default=None)
        missing = [
            rp
            for rp in await self._restore_points(source.repository, source.job)
            if since is None or parse_time(rp.created) > since
        ]
        if not missing:
            raise HTTPException(
                409,
                f"nothing to copy: no restore point of job {source.job} in"
                f" {source.repository} is newer than the newest in {job.repository}",
            )
        return await self._new_copy(source.repository, missing[0], job.repository, full), missing

    async def _run_copies(
        self, job: Job, session: Session, missing: list[cmd.RestorePointInfo]
    ) -> None:
        """A copy job's sessions, one restore point each, oldest first; then its
        retention policy. One that fails ends the run: the next run copies the rest."""
        source = job.copy_from
        assert source is not None
        for index, rp in enumerate(missing):
            if index:
                try:
                    session = await self._new_copy(source.repository, rp, job.repository, False)
                except HTTPException as exc:
                    log.warning("copy job %s stopped before %s: %s", job.name, rp.id, exc.detail)
                    return
            await self._sessions.backup(session, job.compression, copy_of=rp)
            if session.state not in ("success", "warning"):
                return
        await self._apply_retention(job, session)

    async def _after_source(self, job: Job) -> None:
        """Start the copy jobs to run right after a session of ``job`` stored a restore
        point."""
        for copy_job, _ in self._jobs.all():
            source = copy_job.copy_from
            if source is None or not (source.after_source and copy_job.enabled):
                continue
            if (source.repository, source.job) != job.stored_as:
                continue
            try:
                await self._start_job(copy_job, full=False)
            except HTTPException as exc:
                log.warning("copy job %s after %s: %s", copy_job.name, job.name, exc.detail)

    # -- repositories -------------------------------------------------------------

    async def _known_repository(self, name: str) -> RepositoryInfo:
        info = await self._directory.get(name, timeout=5.0)
        if info is None:
            raise HTTPException(404, f"repository {name!r} is not served by any target mover")
        return info

    async def _latest(self, repository: str, job: str, disk: str) -> str | None:
        """The newest restore point of ``job`` with ``disk``: the parent of its next backup."""
        args = cmd.LatestRestorePointArguments(job=job, disk=disk)
        return (await self._command(repository, cmd.LATEST_RESTORE_POINT, args)).restore_point

    async def _generation(self, repository: str) -> int:
        """A new generation of the repository, for a backup beginning: GC keeps the packs
        sealed in it and later while the backup runs."""
        args = cmd.StartGenerationArguments()
        return (await self._command(repository, cmd.START_GENERATION, args)).generation

    def _spawn(self, coroutine: Any) -> None:
        assert self._group is not None
        self._group.create_task(coroutine)

    async def _session_command(
        self,
        repo: str,
        spec: CommandSpec[A, R],
        arguments: A,
        timeout: float | None = None,
        epoch: Epoch | None = None,
    ) -> R:
        """:meth:`_command` for sessions, whose failures are SessionErrors."""
        try:
            return await self._command(repo, spec, arguments, timeout, epoch)
        except HTTPException as exc:
            raise SessionError(str(exc.detail)) from exc

    async def _command(
        self,
        repo: str,
        spec: CommandSpec[A, R],
        arguments: A,
        timeout: float | None = None,
        epoch: Epoch | None = None,
    ) -> R:
        """Send a command to the repository's owner and return its reply's result. A
        command is handled at most once by the instance that took it; if that owner
        restarts before it answers, the command is sent again to the new one (every
        repository command may be repeated: a commit finds its restore point made)."""

        owner = self._directory.owner(repo)

        async def owner_changed() -> None:
            nonlocal owner
            await self._directory.owner_changed(repo, owner)
            owner = self._directory.owner(repo)

        try:
            return await self._mesh.commands.call(
                self._mesh.topics.commands(repo),
                await self._replies_mailbox(repo),
                spec,
                arguments,
                timeout or self._config.command_timeout_s,
                f"{spec.name} on repository {repo}",
                again_when=owner_changed,
                epoch=epoch,
            )
        except TimeoutError as exc:
            raise HTTPException(504, str(exc)) from exc
        except RemoteError as exc:
            raise HTTPException(HTTP_STATUS[exc.code], str(exc)) from exc

    async def _guest_command(
        self, spec: CommandSpec[A, R], arguments: A, epoch: Epoch, what: str, timeout: float
    ) -> R:
        """Send a command about ``what`` of a session's run to the guest-proxies;
        GuestError when it failed."""
        try:
            return await self._mesh.commands.call(
                self._mesh.topics.guest_commands,
                self._guest_events,
                spec,
                arguments,
                timeout,
                f"{spec.name} of {what} from any guest-proxy",
                key=epoch.session_id,
                epoch=epoch,
            )
        except RemoteError as exc:
            raise GuestError(str(exc)) from exc

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
