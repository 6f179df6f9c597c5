"""When a schedule runs its job: due runs, missed runs and overlapping runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from blockferry.orchestrator.jobs import Schedule
from blockferry.orchestrator.scheduler import Decision, decide

NIGHTLY = "30 1 * * *"
LAST = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)  # 01:30 in Berlin, the last run
DUE = datetime(2026, 11, 27, 0, 30, tzinfo=UTC)


def schedule(**more: str) -> Schedule:
    return Schedule(cron=NIGHTLY, timezone="Europe/Berlin", **more)  # type: ignore[arg-type]


def test_nothing_before_the_next_run_then_the_run() -> None:
    assert decide(schedule(), LAST, DUE - timedelta(seconds=1), False) == Decision("wait")
    assert decide(schedule(), LAST, DUE + timedelta(seconds=1), False) == Decision("run", DUE)


def test_a_run_missed_while_down_runs_once_or_is_skipped() -> None:
    three_days_later = DUE + timedelta(days=2, hours=5)
    newest = DUE + timedelta(days=2)
    assert decide(schedule(), LAST, three_days_later, False) == Decision("run", newest)
    skipped = decide(schedule(missed="skip"), LAST, three_days_later, False)
    assert (skipped.action, skipped.due) == ("skip", newest)
    assert "3 runs missed" in skipped.why
    # just late (the tick), not missed
    assert decide(schedule(missed="skip"), LAST, DUE + timedelta(seconds=5), False).action == "run"


def test_a_run_due_while_the_previous_runs_is_skipped_or_queued() -> None:
    now = DUE + timedelta(seconds=2)
    skipped = decide(schedule(), LAST, now, True)
    assert (skipped.action, skipped.due, skipped.why) == (
        "skip",
        DUE,
        "the previous run has not ended",
    )
    queued = decide(schedule(overlap="queue"), LAST, now, True)
    assert (queued.action, queued.due) == ("wait", DUE)
    assert decide(schedule(overlap="queue"), LAST, now, False) == Decision("run", DUE)
