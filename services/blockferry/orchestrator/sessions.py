"""Running sessions: each disk a leased task on the source movers, side by side; a
backup then commits the disks that succeeded as one restore point.

Every transition of a session or of one of its disks is appended to the session-events
topic, and the session's current state (with what is needed to carry it on) is written
to the compacted sessions topic. An orchestrator that starts reads the sessions topic
and carries on every session that had not ended: a disk whose mover may still be at
work is followed first, and offered again only when its lease expires; a session that
was committing commits again (a commit is idempotent per session).

A backup of a job with guest processing freezes every VM's guest, takes the disks'
snapshots, and thaws the guests, before any disk is read; the snapshots are deleted at
the end, whatever the outcome. A session that was among those steps when the
orchestrator stopped thaws its guests and deletes its snapshots, then takes them again.
A cancelled session stops its tasks on the movers and commits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

import blockferry.changed_ranges
from blockferry import failpoints, log_context
from blockferry.core.errors import BlockferryError, GuestError, SessionError
from blockferry.failpoints import Point
from blockferry.mesh import Mesh
from blockferry.orchestrator.jobs import Snapshot
from blockferry.orchestrator.metrics import OrchestratorMetrics
from blockferry.orchestrator.models import Session, SessionKind, SessionTask
from blockferry.orchestrator.public_events import PublicEvents
from blockferry.orchestrator.settings import OrchestratorConfig
from blockferry.orchestrator.state import GuestPlan, SessionPlan, StoredSession
from blockferry.repository.ids import format_time, new_restore_point_id
from blockferry.transport import commands as cmd
from blockferry.transport import expiry
from blockferry.transport.commands import CommandSpec, GuestStep
from blockferry.transport.expiry import Epoch
from blockferry.transport.mailbox import Mailbox, next_record
from blockferry.transport.records import (
    Message,
    SessionEvent,
    SessionRecord,
    Task,
    TaskProgress,
    TaskState,
)
from blockferry.transport.topics import CONTROL_RETENTION_MS

log = logging.getLogger(__name__)


A = TypeVar("A", bound=Message)
R = TypeVar("R", bound=Message)


class CommandSender(Protocol):
    """Sends a command to a repository's owner and returns its result."""

    def __call__(
        self,
        repo: str,
        spec: CommandSpec[A, R],
        arguments: A,
        timeout: float | None = None,
        epoch: Epoch | None = None,
    ) -> Awaitable[R]: ...


class GuestSender(Protocol):
    """Sends a command about ``what`` (a VM, a disk) of a session's run ``epoch`` to the
    guest-proxies and returns its result. Raises GuestError when it failed, TimeoutError
    when no guest-proxy answered."""

    def __call__(
        self, spec: CommandSpec[A, R], arguments: A, epoch: Epoch, what: str, timeout: float
    ) -> Awaitable[R]: ...


THAW_LIMIT_S = 300.0
"""The longest a post-thaw script may run."""

PREPARING = ("guest-freeze", "snapshot", "guest-thaw")


class SessionCancelled(SessionError):
    """The operator cancelled the session."""


class Sessions:
    """The sessions of the mesh, and the running of them."""

    def __init__(
        self,
        mesh: Mesh,
        config: OrchestratorConfig,
        progress: Mailbox,
        command: CommandSender,
        guest: GuestSender,
        metrics: OrchestratorMetrics,
        events: PublicEvents,
    ) -> None:
        self._mesh = mesh
        self._events = events
        self._config = config
        self._progress = progress
        self._command = command
        self._guest = guest
        self._margin = config.guest_answer_margin_s
        self._bodies: dict[str, asyncio.Task[None]] = {}
        """The running body of each session, cancelled to cancel the session."""
        self._sessions: dict[str, Session] = {}
        self._plans: dict[str, SessionPlan] = {}
        """Per session, what running it needs beyond the session itself."""
        self._changed: dict[str, asyncio.Event] = {}
        """Set (and replaced) whenever a session changes, for long-polling clients."""
        self._metrics = metrics

    async def load(self) -> list[Session]:
        """Read every session from the sessions topic; return those that had not ended."""
        consumer = self._mesh.consumer("sessions")
        await consumer.start()
        try:
            await consumer.assign_all_from_start(self._mesh.topics.sessions)
            for record in await consumer.read_to_end():
                if isinstance(record.value, StoredSession):
                    self._load(record.value)
                elif isinstance(record.value, SessionRecord):
                    self._load_legacy(record.value)
                elif record.value is None:  # forgotten before compaction removed it
                    self._forget((record.key or b"").decode(errors="replace"))
        finally:
            await consumer.stop()
        await self.forget_old()
        return [s for s in self.all() if not s.ended]

    async def forget_old(self) -> None:
        """Forget the sessions that ended more than ``session_history_days`` ago, except
        the newest of each job (the scheduler and the job's last result read it): a
        tombstone on the sessions topic removes them there too. Their transitions stay
        on the session-events topic for its own retention."""
        keep = timedelta(days=self._config.session_history_days)
        newest: dict[tuple[str, str], str] = {}
        for session in self.all():
            newest[(session.repository, session.job)] = session.id
        now = datetime.now(UTC)
        for session in self.all():
            if (
                session.finished is not None
                and now - session.finished > keep
                and newest[(session.repository, session.job)] != session.id
            ):
                await self._mesh.producer.send_and_wait(
                    self._mesh.topics.sessions, None, key=session.id
                )
                self._forget(session.id)

    def _forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._plans.pop(session_id, None)
        self._changed.pop(session_id, None)

    def _load(self, stored: StoredSession) -> None:
        self._sessions[stored.session_id] = stored.session
        self._metrics.loaded(stored.session)
        self._plans[stored.session_id] = stored.plan

    def _load_legacy(self, record: SessionRecord) -> None:
        """A session an orchestrator before typed records wrote, as JSON."""
        try:
            session = Session.model_validate_json(record.session)
            plan = json.loads(record.plan)
            known = {k: v for k, v in plan.items() if k in SessionPlan.model_fields}
            self._load(StoredSession(session_id=session.id, session=session, plan=known))
        except (ValidationError, ValueError, AttributeError) as exc:
            log.error(
                "session %s on the sessions topic is not valid here: %s", record.session_id, exc
            )

    def new(
        self,
        kind: SessionKind,
        repository: str,
        job: str,
        tasks: list[SessionTask],
        generation: int | None = None,
    ) -> Session:
        session = Session(
            id=uuid.uuid4().hex,
            kind=kind,
            repository=repository,
            job=job,
            created=datetime.now(UTC),
            generation=generation,
            tasks=tasks,
        )
        self._sessions[session.id] = session
        self._metrics.started(session)
        return session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def all(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: s.created)

    def running(self, repository: str, job: str) -> Session | None:
        """The backup (or copy) of ``job`` into ``repository`` that has not ended yet."""
        for session in self._sessions.values():
            if session.writes and (session.repository, session.job) == (repository, job):
                if not session.ended:
                    return session
        return None

    def oldest_running_generation(self, repository: str) -> int | None:
        """The repository generation the oldest backup (or copy) into ``repository``
        that has not ended began in (0 for one that did not record it: keep everything)."""
        begun = [
            s.generation or 0
            for s in self._sessions.values()
            if s.writes and s.repository == repository and not s.ended
        ]
        return min(begun) if begun else None

    async def wait_for_change(self, session: Session, seconds: float) -> None:
        if seconds and not session.ended:
            changed = self._changed.setdefault(session.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), seconds)

    async def _changed_state(
        self, session: Session, task: SessionTask | None = None, message: str = ""
    ) -> None:
        """A transition: log it, append it to the history, write the session's state."""
        self._notify(session)
        with log_context.about(
            session=session.id, job=session.job, disk=task.disk if task else None
        ):
            what = f"disk {task.disk}" if task else f"{session.kind} session"
            state = task.state if task else session.state
            log.info("%s %s%s", what, state, f": {message}" if message else "")
        event = SessionEvent(
            session_id=session.id,
            at=format_time(datetime.now(UTC)),
            job=session.job,
            disk=task.disk if task else "",
            state=task.state if task else session.state,
            message=message,
        )
        await self._mesh.producer.send_and_wait(
            self._mesh.topics.session_events, event, key=session.id
        )
        await self._write(session)

    async def save(self, session: Session) -> None:
        """Keep a change made to a session after it ended (its retention's result)."""
        self._notify(session)
        await self._write(session)

    async def _write(self, session: Session) -> None:
        record = StoredSession(
            session_id=session.id, session=session, plan=self._plans.get(session.id, SessionPlan())
        )
        await self._mesh.producer.send_and_wait(self._mesh.topics.sessions, record, key=session.id)

    def _notify(self, session: Session) -> None:
        changed = self._changed.pop(session.id, None)
        if changed is not None:
            changed.set()

    # -- running ----------------------------------------------------------------

    async def backup(
        self,
        session: Session,
        compression: str,
        changed_ranges: tuple[str | None, list[tuple[int, int]]] | None = None,
        dirty_bitmaps: dict[str, str] | None = None,
        guest: GuestPlan | None = None,
        snapshot: Snapshot | None = None,
        copy_of: cmd.RestorePointInfo | None = None,
    ) -> None:
        """Back up every disk of ``session``; commit the ones that succeeded.

        Args:
            changed_ranges: a changed-ranges map (since, [(offset, length), ...]) for a
                session of one disk; published in pages before any task, which
                names them (see :mod:`blockferry.changed_ranges`).
            dirty_bitmaps: disk -> the NBD dirty bitmap to read it by.
            guest: the job's guest processing and each VM's guest access; None: no
                scripts run.
            snapshot: the job's snapshot provider; None: the sources are read as they are.
            copy_of: a copy's source restore point, whose id and creation time the copy
                keeps.
        """
        pages = None
        if changed_ranges is not None:
            pages = await blockferry.changed_ranges.publish(self._mesh, session.id, *changed_ranges)
        self._plans[session.id] = SessionPlan(
            # chosen now, so a dirty bitmap added before a disk is read can carry it
            restore_point=copy_of.id if copy_of else new_restore_point_id(session.created),
            created=copy_of.created if copy_of else None,
            compression=compression,
            changed_ranges_pages=pages,
            dirty_bitmaps=dirty_bitmaps or {},
            guest=guest,
            snapshot=snapshot or Snapshot(),
        )
        await self.carry_on(session)

    async def restore(
        self, session: Session, restore_point: str, force: bool, allow_holes: bool = False
    ) -> None:
        session.restore_point = restore_point
        self._plans[session.id] = SessionPlan(
            restore_point=restore_point, force=force, allow_holes=allow_holes
        )
        await self.carry_on(session)

    async def carry_on(self, session: Session) -> None:
        """Run ``session`` from the state it is in until it ends, as its next epoch
        (written first: a run after a restart never shares an epoch with this one)."""
        plan = self._plans[session.id]
        session.epoch += 1
        await self._write(session)
        if session.kind == "restore":
            restoring = {
                "restore_point": plan.restore_point,
                "force": plan.force,
                "allow_holes": plan.allow_holes,
            }
            await self._run(session, lambda: self._run_tasks(session, lambda task: restoring))
        else:
            await self._run(session, lambda: self._run_backup(session, plan))

    async def cancel(self, session: Session) -> None:
        """Cancel a session that has not ended: its tasks stop, nothing is committed,
        its guests are thawed and its snapshots deleted."""
        session.cancel_requested = True
        await self._write(session)
        await self._stop_movers(session)  # before the snapshots they read are deleted
        body = self._bodies.get(session.id)
        if body is not None:
            body.cancel()

    async def _run_backup(self, session: Session, plan: SessionPlan) -> None:
        try:
            await self._transfer_and_commit(session, plan)
        finally:
            await self._delete_snapshots(session, plan)

    async def _transfer_and_commit(self, session: Session, plan: SessionPlan) -> None:
        if session.state == "pending" or session.state in PREPARING:
            await self._prepare(session, plan)
        if session.state != "committing":
            await self._run_tasks(
                session,
                lambda task: {
                    "compression": plan.compression,
                    "restore_point": plan.restore_point,
                    "parent": task.parent,
                    "changed_ranges_pages": plan.changed_ranges_pages,
                    "dirty_bitmap": plan.dirty_bitmaps.get(task.disk, ""),
                },
            )
            if session.cancel_requested:  # asked while the last tasks were ending
                raise SessionCancelled("cancelled by the operator")
            session.state = "committing"
            await self._changed_state(session)
        stored = [task for task in session.tasks if task.state == "success"]
        parents = sorted(task.parent for task in stored if task.parent)
        failpoints.reached(Point.SESSION_COMMITTING)
        commit = cmd.CommitArguments(
            restore_point=plan.restore_point,
            session_id=session.id,
            job=session.job,
            disks=[task.disk for task in stored],
            parent=parents[-1] if parents else None,
            stats={
                t.disk: cmd.DiskStats(counters=t.counters, tracking=t.tracking, parent=t.parent)
                for t in stored
            },
            created=plan.created,
        )
        rp = await self._command(
            session.repository, cmd.COMMIT, commit, self._config.commit_timeout_s, _epoch(session)
        )
        session.restore_point = rp.id
        await self._events.restore_point_committed(session.repository, rp)

    # -- guest processing and snapshots -----------------------------------------------

    async def _prepare(self, session: Session, plan: SessionPlan) -> None:
        """Freeze the guests, take the snapshots, thaw the guests. A session carried on
        from among these steps undoes them first (thaw and delete are idempotent)."""
        guest = plan.guest
        if session.state in PREPARING:
            log.info("session %s: guest processing was cut short; starting it again", session.id)
            if guest:
                await self._thaw(session, guest, list(guest.access))
            await self._delete_snapshots(session, plan, cut_short=True)
        frozen: list[str] = []
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            if guest:
                session.state = "guest-freeze"
                await self._changed_state(session)
                frozen = await self._freeze(session, guest)
                if session.error:  # a script failed, and the job says that fails the session
                    raise SessionError(session.error)
            if plan.snapshot.provider != "none":
                session.state = "snapshot"
                await self._changed_state(session)
                await self._snapshot(session, plan, guest)
        finally:
            if frozen and guest:
                late = loop.time() - began > guest.processing.freeze_limit_s
                session.state = "guest-thaw"
                await self._changed_state(session)
                await self._thaw(session, guest, frozen)
                if late:
                    session.warnings.append(
                        "the guests' freeze limit expired before the snapshots were taken:"
                        " they may not be application-consistent"
                    )

    async def _freeze(self, session: Session, guest: GuestPlan) -> list[str]:
        """Run the pre-freeze script on every VM's guest, side by side; return the VMs
        whose freeze may have begun (each of them is thawed, whatever happened)."""
        processing = guest.processing
        limit = processing.freeze_limit_s

        async def freeze(vm: str) -> bool:
            arguments = cmd.FreezeArguments(
                session_id=session.id,
                vm=vm,
                access=_access(guest, vm),
                pre_freeze=processing.pre_freeze,
                post_thaw=processing.post_thaw,
                freeze_limit_s=limit,
            )
            try:
                result = await self._guest(
                    cmd.FREEZE, arguments, _epoch(session), f"VM {vm}", limit + self._margin
                )
            except (GuestError, TimeoutError) as exc:
                failed = GuestStep(action="freeze", vm=vm, ok=False, message=str(exc))
                script_failed(session, processing.on_failure, failed)
                # a guest that was not reached has nothing to thaw; one that did not
                # answer may be frozen
                return isinstance(exc, TimeoutError)
            step = result
            session.steps.append(step)
            if not step.ok:
                script_failed(session, processing.on_failure, step)
            return True

        begun = await asyncio.gather(*(freeze(vm) for vm in guest.access))
        frozen = [vm for vm, began in zip(guest.access, begun, strict=True) if began]
        self._notify(session)
        return frozen

    async def _thaw(self, session: Session, guest: GuestPlan, vms: list[str]) -> None:
        processing = guest.processing

        async def thaw(vm: str) -> None:
            arguments = cmd.ThawArguments(
                session_id=session.id,
                vm=vm,
                access=_access(guest, vm),
                post_thaw=processing.post_thaw,
                timeout_s=THAW_LIMIT_S,
            )
            try:
                result = await self._guest(
                    cmd.THAW, arguments, _epoch(session), f"VM {vm}", THAW_LIMIT_S + self._margin
                )
            except (GuestError, TimeoutError) as exc:
                session.steps.append(GuestStep(action="thaw", vm=vm, ok=False, message=str(exc)))
                session.warnings.append(
                    f"thawing VM {vm}: {exc}; its guest thaws itself when its freeze limit expires"
                )
                return
            step = result
            session.steps.append(step)
            if not step.ok:
                script_failed(session, processing.on_failure, step)
            elif step.message.startswith(("thawed by", "the guest had thawed")):
                session.warnings.append(f"VM {vm}: {step.message}")

        await asyncio.gather(*(thaw(vm) for vm in vms))
        self._notify(session)

    async def _snapshot(self, session: Session, plan: SessionPlan, guest: GuestPlan | None) -> None:
        """Take every disk's snapshot, side by side; each one is kept on the session as
        soon as it exists, so that it is deleted whatever happens next."""
        snapshot = plan.snapshot
        limit = guest.processing.freeze_limit_s if guest else None

        async def take(task: SessionTask) -> None:
            arguments = cmd.SnapshotArguments(
                session_id=session.id,
                disk=task.disk,
                source=task.path,
                provider=snapshot.provider,
                create=snapshot.create,
                timeout_s=snapshot.timeout_s,
                freeze_limit_s=limit,
            )
            try:
                result = await self._guest(
                    cmd.SNAPSHOT,
                    arguments,
                    _epoch(session),
                    f"disk {task.disk}",
                    snapshot.timeout_s + self._margin,
                )
            except (GuestError, TimeoutError) as exc:
                session.steps.append(
                    GuestStep(action="snapshot", disk=task.disk, ok=False, message=str(exc))
                )
                raise SessionError(f"taking the snapshot of disk {task.disk}: {exc}") from exc
            task.snapshot = result.path
            await self._write(session)
            session.steps.append(
                GuestStep(
                    action="snapshot",
                    disk=task.disk,
                    ok=True,
                    seconds=result.seconds,
                    message=f"{result.kind}: {result.path}",
                )
            )
            session.warnings.extend(f"disk {task.disk}: {w}" for w in result.warnings)

        results = await asyncio.gather(
            *(take(task) for task in session.tasks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _delete_snapshots(
        self, session: Session, plan: SessionPlan, cut_short: bool = False
    ) -> None:
        """Delete every snapshot the session took; one that cannot be deleted is a
        warning naming it, for the operator to delete.

        Args:
            cut_short: the session was among its snapshots when the orchestrator stopped,
                so a snapshot may exist that was never recorded. A file copy's place
                follows from its source, so every disk's is deleted then.
        """
        snapshot = plan.snapshot

        async def delete(task: SessionTask) -> None:
            arguments = cmd.DeleteSnapshotArguments(
                session_id=session.id,
                disk=task.disk,
                source=task.path,
                path=task.snapshot or "",
                provider=snapshot.provider,
                delete=snapshot.delete,
                timeout_s=snapshot.timeout_s,
            )
            try:
                await self._guest(
                    cmd.DELETE_SNAPSHOT,
                    arguments,
                    _epoch(session),
                    f"disk {task.disk}",
                    snapshot.timeout_s + self._margin,
                )
            except (GuestError, TimeoutError) as exc:
                session.steps.append(
                    GuestStep(action="delete-snapshot", disk=task.disk, ok=False, message=str(exc))
                )
                session.warnings.append(
                    f"the snapshot {task.snapshot} of disk {task.disk} was not deleted: {exc};"
                    " delete it by hand"
                )
                return
            session.steps.append(
                GuestStep(
                    action="delete-snapshot",
                    disk=task.disk,
                    ok=True,
                    message=task.snapshot or "the copy of a snapshot step cut short",
                )
            )
            task.snapshot = None

        unrecorded = cut_short and snapshot.provider == "file-copy"
        taken = [task for task in session.tasks if task.snapshot or unrecorded]
        if taken:
            await asyncio.gather(*(delete(task) for task in taken))
            await self._write(session)

    async def _run(self, session: Session, body: Callable[[], Awaitable[None]]) -> None:
        with log_context.about(session=session.id, job=session.job):
            await self._run_about(session, body)

    async def _run_about(self, session: Session, body: Callable[[], Awaitable[None]]) -> None:
        try:
            if session.state == "pending":
                await self._changed_state(session)
            await self._run_body(session, body)
            failed = [task for task in session.tasks if task.state == "failed"]
            if failed:
                session.warnings.append(
                    f"{len(failed)} of {len(session.tasks)} disks failed:"
                    f" {', '.join(task.disk for task in failed)}"
                )
            # a restore whose disks have warnings (holes left as zeros) is not a success
            holes = session.kind == "restore" and any(task.warnings for task in session.tasks)
            session.state = "warning" if session.warnings or holes else "success"
        except SessionCancelled as exc:
            session.state = "cancelled"
            session.error = str(exc)
            for task in session.tasks:
                if task.state in ("pending", "transferring"):
                    task.state = "cancelled"
            log.warning("%s session %s was cancelled", session.kind, session.id)
        except Exception as exc:  # a session's failure is its result; others go on
            if not isinstance(exc, BlockferryError | TimeoutError):
                log.exception("session %s", session.id)
            session.state = "failed"
            session.error = str(exc) or type(exc).__name__
            log.error("%s session %s failed: %s", session.kind, session.id, session.error)
        if session.writes and session.state in ("failed", "cancelled"):
            await self._discard(session)
        session.finished = datetime.now(UTC)
        session.seconds = (session.finished - session.created).total_seconds()
        self._metrics.ended(session)
        await self._changed_state(session, message=session.error or "; ".join(session.warnings))
        await self._events.session_ended(session)
        await self.forget_old()

    async def _run_body(self, session: Session, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` as a task of its own, so that cancelling the session cancels it
        (and the clean-up in its ``finally`` blocks runs); raise SessionCancelled then."""
        if session.cancel_requested:  # asked before a restart
            await self._stop_movers(session)
            await self._delete_snapshots(
                session, self._plans[session.id], cut_short=session.state in PREPARING
            )
            raise SessionCancelled("cancelled by the operator")
        runner = asyncio.ensure_future(body())
        self._bodies[session.id] = runner
        try:
            await runner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the orchestrator is stopping: the session is carried on later
            raise SessionCancelled("cancelled by the operator") from None
        finally:
            self._bodies.pop(session.id, None)

    async def _stop_movers(self, session: Session) -> None:
        """Tell the source movers to stop the session's tasks."""
        await self._mesh.commands.send(
            self._mesh.topics.task_control,
            cmd.CANCEL,
            cmd.CancelArguments(session_id=session.id),
            CONTROL_RETENTION_MS / 1000,  # read again at each mover's start while kept
            key=session.id,
        )

    async def _discard(self, session: Session) -> None:
        """What the target staged for a backup that commits nothing goes at the next GC."""
        try:
            args = cmd.DiscardArguments(session_id=session.id)
            await self._command(session.repository, cmd.DISCARD, args, epoch=_epoch(session))
        except (BlockferryError, TimeoutError) as exc:
            log.warning("discarding what session %s staged: %s", session.id, exc)

    async def _run_tasks(
        self, session: Session, arguments: Callable[[SessionTask], dict[str, Any]]
    ) -> None:
        """Run every task that has not ended, side by side; raise SessionError when none
        succeeded."""
        if session.state != "transferring":
            session.state = "transferring"
            await self._changed_state(session)
        await asyncio.gather(
            *(
                self._run_task(session, task, arguments(task))
                for task in session.tasks
                if task.state not in ("success", "failed")
            )
        )
        if not any(task.state == "success" for task in session.tasks):
            errors = "; ".join(f"{task.disk}: {task.error}" for task in session.tasks)
            raise SessionError(errors)

    async def _run_task(self, session: Session, task: SessionTask, extra: dict[str, Any]) -> None:
        """Publish a disk's task and follow it, offering it again when its lease expires.
        A task that was under way when the orchestrator stopped is followed first. The
        task's outcome is recorded in ``task``; nothing is raised."""
        with log_context.about(disk=task.disk):
            await self._run_task_about(session, task, extra)

    async def _run_task_about(
        self, session: Session, task: SessionTask, extra: dict[str, Any]
    ) -> None:
        task_id = f"{session.id}/{task.disk}"
        queue = self._progress.open(task_id)
        try:
            first = 0
            if task.state == "transferring":  # carried on: its mover may still be at it
                if await self._follow(session, task, queue):
                    return
                first = task.attempt + 1
            else:
                task.state = "transferring"
                await self._changed_state(session, task)
            for attempt in range(first, self._config.max_attempts):
                task.attempt = attempt
                await self._write(session)  # before the offer: a restart follows this one
                offer = Task.model_validate(
                    {
                        "task_id": task_id,
                        "session_id": session.id,
                        "kind": "backup" if session.writes else "restore",
                        "attempt": attempt,
                        "repository": session.repository,
                        "job": session.job,
                        "disk": task.disk,
                        "path": task.snapshot or task.path,
                        "lease_seconds": self._config.lease_seconds,
                        "epoch": session.epoch,
                        **extra,
                        # not taken within its lease, the task is offered again anyway
                        **expiry.stamp(self._config.lease_seconds),
                    }
                )
                await self._mesh.producer.send_and_wait(self._mesh.topics.tasks, offer, key=task_id)
                if await self._follow(session, task, queue):
                    return
            task.state = "failed"
            task.error = f"no mover finished it in {self._config.max_attempts} attempts"
        except Exception as exc:  # one disk's failure does not stop the others
            if not isinstance(exc, BlockferryError):
                log.exception("task %s", task_id)
            task.state = "failed"
            task.error = str(exc) or type(exc).__name__
        finally:
            self._progress.close(task_id)
            if task.state == "failed":
                log.error("task %s failed: %s", task_id, task.error)
            if task.state in ("success", "failed"):
                await self._changed_state(session, task, task.error)

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
            progress = record.value
            if not isinstance(progress, TaskProgress) or progress.attempt != task.attempt:
                continue  # a report of an earlier offer, from a mover that gave it up
            task.blocks_total = progress.blocks_total
            task.blocks_done = progress.blocks_done
            task.counters = dict(progress.counters)
            self._notify(session)
            if progress.state == TaskState.done:
                task.tracking = progress.tracking
                task.warnings = list(progress.warnings)
                task.state = "success"
                return True
            if progress.state == TaskState.failed:
                task.state = "failed"
                task.error = progress.message
                return True


def _access(guest: GuestPlan, vm: str) -> cmd.GuestAccess:
    """How the guest-proxy reaches ``vm``'s guest, as its commands say it."""
    return cmd.GuestAccess.model_validate(guest.access[vm].model_dump())


def _epoch(session: Session) -> Epoch:
    return Epoch(session.id, session.epoch)


def script_failed(session: Session, on_failure: str, step: GuestStep) -> None:
    """Record a guest script that failed, as the job's ``on_failure`` says: ignore it,
    or warn. With ``fail``, a failed pre-freeze becomes the session's error, which ends
    it before any snapshot is taken (the thaw still runs); a failed post-thaw is a
    warning then, as the snapshots were taken already."""
    if step not in session.steps:
        session.steps.append(step)
    if on_failure == "ignore":
        return
    what = "pre-freeze" if step.action == "freeze" else "post-thaw"
    message = f"{what} script on VM {step.vm} failed: {step.message}"
    if on_failure == "fail" and step.action == "freeze":
        session.error = message
    else:
        session.warnings.append(message)
