"""Tasks and commands expire: read after their expiry (plus the allowed clock skew) they
are refused; those of older senders never expire."""

from __future__ import annotations

from blockferry.transport import expiry
from blockferry.transport.records import Command


def command(issued_at: int = 0, expires_at: int = 0) -> Command:
    return Command(
        command_id="c", name="gc", arguments=b"", issued_at=issued_at, expires_at=expires_at
    )


def stamped(ttl_s: float) -> Command:
    return command(**expiry.stamp(ttl_s))


def test_a_fresh_record_is_done() -> None:
    assert expiry.refusal(stamped(30), clock_skew_s=0) == ""


def test_a_record_past_its_expiry_is_refused_naming_when() -> None:
    said = expiry.refusal(stamped(-1), clock_skew_s=0)
    assert said.startswith("expired at ") and said.endswith(": not done"), said
    assert "(issued 20" in said


def test_the_clock_skew_is_allowed_for() -> None:
    assert expiry.refusal(stamped(-10), clock_skew_s=60) == ""
    assert expiry.refusal(stamped(-61), clock_skew_s=60) != ""


def test_a_record_of_a_sender_before_expiry_never_expires() -> None:
    assert expiry.refusal(command(), clock_skew_s=0) == ""


def test_a_record_of_an_earlier_run_of_its_session_is_refused() -> None:
    fence = expiry.Fence()
    assert fence.refusal("s", 1) == ""
    assert fence.refusal("s", 2) == ""
    said = fence.refusal("s", 1)
    assert said == "sent by run 1 of session s, which run 2 replaced: not done"
    assert fence.refusal("s", 2) == "", "the newest run's records pass, again and again"
    assert fence.refusal("other", 1) == "", "each session has its own runs"


def test_records_without_an_epoch_or_a_session_pass() -> None:
    fence = expiry.Fence()
    fence.refusal("s", 3)
    assert fence.refusal("s", 0) == "", "a sender before epochs"
    assert fence.refusal("", 1) == "", "a command of no session"


def test_the_fence_remembers_a_bounded_number_of_sessions() -> None:
    fence = expiry.Fence(sessions=2)
    for session in ("a", "b", "c"):
        fence.refusal(session, 5)
    assert fence.refusal("a", 1) == "", "the oldest session was forgotten"
    assert fence.refusal("c", 1) != ""
