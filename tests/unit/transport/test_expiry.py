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
