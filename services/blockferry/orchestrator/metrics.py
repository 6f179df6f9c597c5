"""Metrics of the orchestrator: sessions by job and result, how long they took, and
each job's newest good restore point against its schedule (the RPO)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from blockferry.orchestrator.models import ENDED, Session

GOOD = ("success", "warning")
"""Session results that leave a restore point."""

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)


class OrchestratorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["kind", "repository", "backup_job"]
        self.sessions = Counter(
            "blockferry_orchestrator_sessions_total",
            "Sessions ended, by kind, repository, job (backup_job: Prometheus keeps job for"
            " its scrape job) and result (success, warning, failed, cancelled).",
            [*labels, "result"],
            registry=registry,
        )
        self.session_seconds = Histogram(
            "blockferry_orchestrator_session_duration_seconds",
            "How long sessions took, from creation to their end, by kind, repository and job.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.last_good = Gauge(
            "blockferry_orchestrator_job_last_good_restore_point_timestamp_seconds",
            "When the newest restore point of a job was committed by a session that ended"
            " in success or warning (Unix time).",
            ["repository", "backup_job"],
            registry=registry,
        )
        self.schedule_interval = Gauge(
            "blockferry_orchestrator_job_schedule_interval_seconds",
            "Time between a scheduled job's next two runs: its restore point objective"
            " (alerted on with a margin).",
            ["repository", "backup_job"],
            registry=registry,
        )
        self._scheduled: set[tuple[str, str]] = set()
        self._last_good: dict[tuple[str, str], float] = {}

    def started(self, session: Session) -> None:
        """Pre-set the label values of a session's job, so rates start from zero."""
        for result in ENDED:
            self.sessions.labels(session.kind, session.repository, session.job, result)
        self.session_seconds.labels(session.kind, session.repository, session.job)

    def ended(self, session: Session) -> None:
        labels = (session.kind, session.repository, session.job)
        self.sessions.labels(*labels, session.state).inc()
        self.session_seconds.labels(*labels).observe(session.seconds)
        self.loaded(session)

    def loaded(self, session: Session) -> None:
        """A session read at start-up (or just ended): its job's newest good restore point."""
        if session.state in GOOD and session.restore_point and session.finished:
            key = (session.repository, session.job)
            newest = max(self._last_good.get(key, 0.0), session.finished.timestamp())
            self._last_good[key] = newest
            self.last_good.labels(*key).set(newest)

    def scheduled(self, intervals: dict[tuple[str, str], float]) -> None:
        """The schedule interval of each enabled scheduled job, by (repository, job)."""
        for gone in self._scheduled - intervals.keys():
            self.schedule_interval.remove(*gone)
        for key, seconds in intervals.items():
            self.schedule_interval.labels(*key).set(seconds)
        self._scheduled = set(intervals)
