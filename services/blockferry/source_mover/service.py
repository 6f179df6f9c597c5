"""The source mover role: takes leased tasks, reads disks and sends their blocks;
on restore, writes the blocks the target side streams back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from prometheus_client import CollectorRegistry

from blockferry import log_context
from blockferry.core.errors import BlockferryError, RecordError
from blockferry.core.restore_point_uri import parse_restore_point_uri
from blockferry.core.units import size
from blockferry.mesh import Mesh, RepositoryDirectory
from blockferry.source_mover.backup import BackupRun
from blockferry.source_mover.dedupe_keys import DedupeKeys
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.source_mover.restore import RestoreRun
from blockferry.source_mover.restore_point_source import RestorePointSource
from blockferry.source_mover.settings import SourceMoverSettings
from blockferry.transport import expiry
from blockferry.transport.commands import CANCEL
from blockferry.transport.mailbox import Mailbox
from blockferry.transport.records import (
    Command,
    RepositoryInfo,
    Task,
    TaskProgress,
    TaskState,
)

log = logging.getLogger(__name__)


class TaskRun(Protocol):
    """One task being carried out: a backup read or a restore write."""

    tracking: str
    """How a backup found the changed blocks (full, changed-ranges, digest-compare)."""
    warnings: list[str]

    async def run(self) -> None: ...

    def progress(self) -> dict[str, int]:
        """Counters so far (blocks_total, blocks_done, bytes …), for progress reports."""
        ...


class SourceMover:
    """Runs backup and restore tasks, at most ``max_tasks`` at a time."""

    name = "source-mover"

    def __init__(self, settings: SourceMoverSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._config = settings.source_mover
        self._mesh = Mesh(settings, self.name)
        self._metrics = SourceMoverMetrics(registry)
        self._directory = RepositoryDirectory(self._mesh)
        self._keys = DedupeKeys(settings.dedupe_keys_dir())
        self._tasks = self._mesh.consumer("tasks", group="source-mover")
        self._control = self._mesh.consumer("task-control")
        self._cancelled: set[str] = set()
        self._fence = expiry.Fence()
        """Sessions cancelled (within the control topic's retention): their tasks stop."""
        self._by_session: dict[str, set[asyncio.Task[None]]] = {}
        self._pool = ThreadPoolExecutor(self._config.workers, thread_name_prefix="source-mover")
        self._mailboxes: dict[str, Mailbox] = {}
        self._mailbox_lock = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()
        self._runs: dict[str, tuple[int, asyncio.Task[None]]] = {}
        """The attempt under way here of each task, by task id: one at a time (see
        :meth:`_offered`)."""
        self._session_sent: dict[str, set[bytes]] = {}
        self._session_users: dict[str, int] = {}
        self._group: asyncio.TaskGroup | None = None
        self.ready = False

    async def start(self) -> None:
        await self._mesh.start()
        await self._directory.start()
        await self._tasks.start([self._mesh.topics.tasks])
        await self._control.start()
        await self._control.assign_all_from_start(self._mesh.topics.task_control)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._directory.run())
            group.create_task(self._follow_control())
            self.ready = True
            await self._take_tasks()

    async def stop(self) -> None:
        self.ready = False
        for task in list(self._running):
            task.cancel()
        for mailbox in self._mailboxes.values():
            await mailbox.stop()
        await self._tasks.stop()
        await self._control.stop()
        await self._directory.stop()
        await self._mesh.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _take_tasks(self) -> None:
        async for batch in self._tasks.batches(timeout_ms=500, max_records=1):
            for record in batch:
                await self._tasks.commit({record.source: record.offset + 1})
                offer = record.value
                if not isinstance(offer, Task):
                    continue
                refusal = self._refusal(offer)
                if refusal:
                    continue
                assert self._group is not None
                if not await self._offered(offer.task_id, offer.attempt):
                    continue
                session_id = offer.session_id
                task = self._group.create_task(self._run_task(offer))
                self._running.add(task)
                self._by_session.setdefault(session_id, set()).add(task)
                task.add_done_callback(functools.partial(self._task_ended, session_id))
                self._runs[offer.task_id] = (offer.attempt, task)
            assigned = self._tasks.assignment()
            if len(self._running) >= self._config.max_tasks:
                self._tasks.pause(assigned)
            else:
                self._tasks.resume(assigned)

    def _refusal(self, offer: Task) -> str:
        """Why a task must not be started (logged and counted), or "": it expired, or an
        earlier run of its session sent it."""
        for reason, stale in (
            ("expired", expiry.refusal(offer, self._settings.kafka.clock_skew_s)),
            ("superseded", self._fence.refusal(offer.session_id, offer.epoch)),
        ):
            if stale:
                log.warning("task %s attempt %d: %s", offer.task_id, offer.attempt, stale)
                self._metrics.tasks_refused.labels(reason).inc()
                return stale
        return ""

    async def _offered(self, task_id: str, attempt: int) -> bool:
        """Whether to start ``attempt`` of a task: a task has one attempt under way on a
        mover at a time. The same attempt read again (its offset not committed before a
        rebalance) is not started twice; a newer one (the orchestrator offered the task
        again, as after an outage longer than the lease) stops the older attempt first,
        which leaves what it sent for the newer to resume from, or removes its
        temporary restore file."""
        running = self._runs.get(task_id)
        if running is None or running[1].done():
            return True
        older, task = running
        if attempt <= older:
            log.info("task %s: attempt %d is under way here already", task_id, older)
            return False
        log.warning(
            "task %s: offered again (attempt %d); stopping attempt %d here", task_id, attempt, older
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    def _task_ended(self, session_id: str, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        for task_id, (_, running) in list(self._runs.items()):
            if running is task:
                del self._runs[task_id]
        tasks = self._by_session.get(session_id, set())
        tasks.discard(task)
        if not tasks:
            self._by_session.pop(session_id, None)

    async def _follow_control(self) -> None:
        """Stop the tasks of cancelled sessions, and never start one of them."""
        async for batch in self._control.batches(timeout_ms=500):
            for record in batch:
                command = record.value
                if not isinstance(command, Command) or command.name != CANCEL.name:
                    continue
                try:
                    cancel = self._mesh.codec.decode_as(command.arguments, CANCEL.arguments)
                except RecordError as exc:
                    log.error("a cancel command without a session: %s", exc)
                    continue
                session_id = cancel.session_id
                self._cancelled.add(session_id)
                for task in self._by_session.get(session_id, set()):
                    task.cancel()

    async def _mailbox(self, topic: str, field: str) -> Mailbox:
        async with self._mailbox_lock:
            mailbox = self._mailboxes.get(topic)
            if mailbox is None:
                mailbox = self._mesh.mailbox(f"mailbox-{len(self._mailboxes)}", topic, field)
                await mailbox.start()
                assert self._group is not None
                self._group.create_task(mailbox.run())
                self._mailboxes[topic] = mailbox
            return mailbox

    async def _run_task(self, task: Task) -> None:
        with log_context.about(session=task.session_id, job=task.job, disk=task.disk):
            await self._run_task_about(task)

    async def _run_task_about(self, task: Task) -> None:
        kind = task.kind
        self._metrics.tasks_running.inc()
        run: TaskRun | None = None
        reporter: asyncio.Task[None] | None = None
        try:
            if task.session_id in self._cancelled:
                raise asyncio.CancelledError
            await self._report(task, TaskState.accepted, {})
            run = await self._prepare_run(task)
            reporter = asyncio.create_task(self._report_while_running(task, run))
            log.info("%s of disk %s started", kind, task.disk)
            await run.run()
            log.info("%s of disk %s done: %s", kind, task.disk, _summary(run.progress()))
            await self._report(
                task, TaskState.done, run.progress(), warnings=run.warnings, tracking=run.tracking
            )
            self._metrics.tasks.labels(kind, "done").inc()
        except Exception as exc:  # a task's failure is reported; it never stops the mover
            if isinstance(exc, BlockferryError | OSError | TimeoutError):
                log.error("task %s (%s of %s) failed: %s", task.task_id, kind, task.disk, exc)
            else:
                log.exception("task %s (%s of %s) failed", task.task_id, kind, task.disk)
            self._metrics.tasks.labels(kind, "failed").inc()
            await self._report(task, TaskState.failed, run.progress() if run else {}, str(exc))
        except asyncio.CancelledError:
            if task.session_id not in self._cancelled:
                raise  # the mover is stopping
            log.warning("task %s: its session was cancelled", task.task_id)
            self._metrics.tasks.labels(kind, "cancelled").inc()
            await self._report(task, TaskState.failed, run.progress() if run else {}, "cancelled")
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            if isinstance(run, BackupRun):
                self._release_session(task.session_id)
            self._metrics.tasks_running.dec()

    async def _prepare_run(self, task: Task) -> TaskRun:
        repo = await self._directory.get(task.repository)
        if repo is None:
            raise BlockferryError(
                f"repository {task.repository!r} is not served by any target mover"
            )
        key = self._keys.key_for(repo)
        topics = self._mesh.topics
        replies = await self._mailbox(topics.replies(task.repository), "correlation_id")
        if task.kind == "restore":
            roots = self._settings.restore_root_dirs()
            return RestoreRun(
                self._mesh, self._config, self._metrics, self._pool, task, key, replies, roots
            )
        return BackupRun(
            self._mesh,
            self._config,
            self._metrics,
            self._pool,
            task,
            repo,
            key,
            replies,
            await self._mailbox(topics.lookup_replies(task.repository), "correlation_id"),
            self._sent_digests(task.session_id),
            functools.partial(self._open_copy_source, task, repo),
        )

    async def _open_copy_source(
        self, task: Task, destination: RepositoryInfo
    ) -> RestorePointSource:
        """The restore point a copy task reads, through its repository's owner."""
        name, _, _ = parse_restore_point_uri(task.path)
        source = await self._directory.get(name)
        if source is None:
            raise BlockferryError(f"repository {name!r} is not served by any target mover")
        return await RestorePointSource.open(
            self._mesh,
            self._pool,
            await self._mailbox(self._mesh.topics.replies(name), "correlation_id"),
            task.path,
            source,
            self._keys.key_for(source),
            destination,
            task.session_id,
            task.attempt,
        )

    def _sent_digests(self, session_id: str) -> set[bytes]:
        self._session_users[session_id] = self._session_users.get(session_id, 0) + 1
        return self._session_sent.setdefault(session_id, set())

    def _release_session(self, session_id: str) -> None:
        users = self._session_users.get(session_id, 0) - 1
        if users <= 0:
            self._session_users.pop(session_id, None)
            self._session_sent.pop(session_id, None)
        else:
            self._session_users[session_id] = users

    async def _report_while_running(self, task: Task, run: TaskRun) -> None:
        while True:
            await asyncio.sleep(self._config.progress_interval_s)
            await self._report(task, TaskState.running, run.progress())

    async def _report(
        self,
        task: Task,
        state: TaskState,
        counters: dict[str, int],
        message: str = "",
        warnings: list[str] | None = None,
        tracking: str = "",
    ) -> None:
        progress = TaskProgress(
            task_id=task.task_id,
            session_id=task.session_id,
            attempt=task.attempt,
            mover=self._settings.instance,
            state=state,
            blocks_total=counters.get("blocks_total", 0),
            blocks_done=counters.get("blocks_done", 0),
            counters=counters,
            message=message,
            tracking=tracking,
            warnings=warnings or [],
        )
        await self._mesh.producer.send_and_wait(
            self._mesh.topics.task_progress, progress, key=task.task_id
        )


def _summary(counters: dict[str, int]) -> str:
    """A task's counters, for people."""
    c = counters.get
    if "bytes_written" in counters:  # a restore
        return f"{c('blocks_done', 0)} blocks, {size(c('bytes_written', 0))} written"
    deduplicated = sum(
        c(f"blocks_deduplicated_{how}", 0) for how in ("parent", "session", "global")
    )
    return (
        f"{c('blocks_read', 0)} of {c('blocks_total', 0)} blocks read"
        f" ({size(c('bytes_read', 0))}), {c('blocks_sent', 0)} sent"
        f" ({size(c('bytes_sent', 0))}), {c('blocks_zero', 0)} zero,"
        f" {deduplicated} deduplicated"
    )
