"""Starting jobs on their schedules.

Each enabled job with a schedule is looked at every tick. The last run handled is
remembered per job; at start-up it is the newest ``scheduled_for`` among the job's
sessions (kept on the sessions topic), or, for a job that never ran on schedule, the
moment the scheduler first saw it (so a new job does not start at once). A run is
*missed* when its time passed more than ``MISSED_AFTER`` ago (the orchestrator was
down): the job's ``missed`` setting runs it once, or skips it. A run due while the job's
previous session still runs is skipped, or queued until that session ends (``overlap``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from blockferry.core.errors import BlockferryError
from blockferry.orchestrator.job_store import JobStore
from blockferry.orchestrator.jobs import Job, Schedule
from blockferry.orchestrator.metrics import OrchestratorMetrics
from blockferry.orchestrator.sessions import Sessions
from blockferry.repository.ids import utc_now

log = logging.getLogger(__name__)

MISSED_AFTER = timedelta(seconds=60)
MAX_STEPS = 100_000
"""Due times looked at to find the newest one after a long stop (every minute: 69 days)."""


@dataclass(frozen=True)
class Decision:
    action: Literal["wait", "run", "skip"]
    due: datetime | None = None
    """The scheduled time the run is for (run), or that is given up (skip)."""
    why: str = ""


def decide(schedule: Schedule, last: datetime, now: datetime, running: bool) -> Decision:
    """What to do about a schedule whose last handled run was at ``last``."""
    due = schedule.next_run(last)
    if due > now:
        return Decision("wait")
    missed = 0
    for _ in range(MAX_STEPS):
        following = schedule.next_run(due)
        if following > now:
            break
        due, missed = following, missed + 1
    if now - due > MISSED_AFTER:
        missed += 1
    if missed and schedule.missed == "skip":
        return Decision("skip", due, f"{missed} runs missed while the orchestrator was down")
    if running:
        if schedule.overlap == "skip":
            return Decision("skip", due, "the previous run has not ended")
        return Decision("wait", due, "queued until the previous run ends")
    return Decision("run", due)


class Scheduler:
    def __init__(
        self,
        jobs: JobStore,
        sessions: Sessions,
        start: Callable[[Job, datetime], Awaitable[object]],
        metrics: OrchestratorMetrics,
        tick_s: float = 1.0,
    ) -> None:
        self._jobs = jobs
        self._metrics = metrics
        self._sessions = sessions
        self._start = start
        self._tick_s = tick_s
        self._last: dict[str, datetime] = {}

    async def run(self) -> None:
        while True:
            now = utc_now()
            intervals = {}
            for job, _ in self._jobs.all():
                if job.enabled and job.schedule is not None:
                    intervals[job.stored_as] = job.schedule.interval(now)
                    await self._consider(job, job.schedule, now)
            self._metrics.scheduled(intervals)
            await asyncio.sleep(self._tick_s)

    async def _consider(self, job: Job, schedule: Schedule, now: datetime) -> None:
        last = self._last.get(job.name) or self._last_scheduled(job) or now
        self._last[job.name] = last
        running = self._sessions.running(*job.stored_as) is not None
        decision = decide(schedule, last, now, running)
        if decision.action == "wait" or decision.due is None:
            return
        self._last[job.name] = decision.due
        if decision.action == "skip":
            log.warning("job %s: run of %s skipped: %s", job.name, decision.due, decision.why)
            return
        log.info("job %s: starting its run of %s", job.name, decision.due)
        try:
            await self._start(job, decision.due)
        except (BlockferryError, OSError) as exc:
            log.error("job %s: could not start its run of %s: %s", job.name, decision.due, exc)

    def _last_scheduled(self, job: Job) -> datetime | None:
        times = [
            s.scheduled_for
            for s in self._sessions.all()
            if (s.repository, s.job) == job.stored_as and s.scheduled_for is not None
        ]
        return max(times) if times else None
