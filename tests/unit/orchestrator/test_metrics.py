"""The orchestrator's metrics: sessions by job and result, and each job's newest good
restore point, also from the sessions read at start-up, against its schedule interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from blockferry.orchestrator.jobs import Schedule
from blockferry.orchestrator.metrics import OrchestratorMetrics
from blockferry.orchestrator.models import Session, SessionTask
from blockferry.orchestrator.public_events import session_ended

START = datetime(2026, 11, 27, 1, 30, tzinfo=UTC)
LAST_GOOD = "blockferry_orchestrator_job_last_good_restore_point_timestamp_seconds"


def ended(state: str, minutes: int, restore_point: str | None = "rp") -> Session:
    session = Session(
        id=f"s{minutes}",
        kind="backup",
        repository="main",
        job="web",
        created=START + timedelta(minutes=minutes),
        tasks=[SessionTask(disk="web1.sda", path="/dev/sda", state="success")],
    )
    session.state = state  # type: ignore[assignment]
    session.finished = session.created + timedelta(minutes=5)
    session.seconds = 300.0
    session.restore_point = restore_point
    return session


def test_the_newest_good_restore_point_of_each_job_is_kept() -> None:
    registry = CollectorRegistry()
    metrics = OrchestratorMetrics(registry)
    good = ended("success", 0)
    metrics.loaded(good)
    metrics.ended(ended("failed", 60, restore_point=None))
    labels = {"repository": "main", "backup_job": "web"}
    assert registry.get_sample_value(LAST_GOOD, labels) == good.finished.timestamp()  # type: ignore[union-attr]

    warned = ended("warning", 120)
    metrics.ended(warned)
    metrics.loaded(good)  # an older one read later does not go back in time
    assert registry.get_sample_value(LAST_GOOD, labels) == warned.finished.timestamp()  # type: ignore[union-attr]

    results = {"kind": "backup", "repository": "main", "backup_job": "web"}
    sessions = "blockferry_orchestrator_sessions_total"
    assert registry.get_sample_value(sessions, {**results, "result": "failed"}) == 1
    assert registry.get_sample_value(sessions, {**results, "result": "warning"}) == 1
    duration = "blockferry_orchestrator_session_duration_seconds_sum"
    assert registry.get_sample_value(duration, results) == 600.0


def test_schedule_intervals_follow_the_enabled_scheduled_jobs() -> None:
    registry = CollectorRegistry()
    metrics = OrchestratorMetrics(registry)
    interval = "blockferry_orchestrator_job_schedule_interval_seconds"
    metrics.scheduled({("main", "web"): 86400.0, ("main", "db"): 3600.0})
    metrics.scheduled({("main", "web"): 86400.0})
    assert registry.get_sample_value(interval, {"repository": "main", "backup_job": "web"}) == 86400
    assert registry.get_sample_value(interval, {"repository": "main", "backup_job": "db"}) is None


def test_a_schedule_interval_is_the_time_between_its_next_two_runs() -> None:
    assert Schedule(cron="30 1 * * *").interval(START) == 86400
    assert Schedule(cron="*/15 * * * *").interval(START) == 900
    weekdays = Schedule(cron="0 2 * * 1-5")
    # Friday 2026-11-27 02:00, then Monday 02:00: over a weekend the window is its gap
    assert weekdays.interval(START) == 3 * 86400
    assert weekdays.interval(START + timedelta(days=3)) == 86400  # Monday 01:30


def test_a_session_end_is_a_public_event_with_its_failed_disks() -> None:
    session = ended("warning", 0)
    session.tasks.append(SessionTask(disk="web1.sdb", path="/dev/sdb", state="failed"))
    session.warnings = ["1 of 2 disks failed: web1.sdb"]
    event = session_ended(session)
    assert (event.kind, event.job, event.state, event.restore_point) == (
        "backup",
        "web",
        "warning",
        "rp",
    )
    assert (event.disks, event.failed_disks) == (["web1.sda", "web1.sdb"], ["web1.sdb"])
    assert event.created == "2026-11-27T01:30:00.000000Z"
    assert event.finished == "2026-11-27T01:35:00.000000Z"
