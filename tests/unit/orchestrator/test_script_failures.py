"""What a failed guest script does to its session, per the job's ``on_failure``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from blockferry.orchestrator.models import GuestStep, Session
from blockferry.orchestrator.sessions import script_failed


def session() -> Session:
    return Session(
        id="s1", kind="backup", repository="default", job="db", created=datetime.now(UTC)
    )


@pytest.mark.parametrize(
    ("on_failure", "action", "error", "warned"),
    [
        ("ignore", "freeze", "", False),
        ("ignore", "thaw", "", False),
        ("warn", "freeze", "", True),
        ("warn", "thaw", "", True),
        ("fail", "freeze", "pre-freeze script on VM pg1 failed: exit code 3: busy", False),
        ("fail", "thaw", "", True),  # the snapshots exist already: a warning
    ],
)
def test_a_failed_script_is_ignored_a_warning_or_the_sessions_error(
    on_failure: str, action: str, error: str, warned: bool
) -> None:
    failed = session()
    step = GuestStep(action=action, vm="pg1", ok=False, exit_code=3, message="exit code 3: busy")

    script_failed(failed, on_failure, step)

    assert failed.steps == [step], "every step is kept, whatever the policy"
    assert failed.error == error
    assert bool(failed.warnings) == warned
    if warned:
        (warning,) = failed.warnings
        assert "script on VM pg1 failed: exit code 3: busy" in warning
