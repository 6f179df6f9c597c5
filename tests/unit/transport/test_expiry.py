"""Tasks and commands expire: read after their expiry (plus the allowed clock skew) they
are refused; those of older senders never expire."""

from __future__ import annotations

from blockferry.transport import expiry


def test_a_fresh_record_is_done() -> None:
    assert expiry.refusal(expiry.stamp(30), clock_skew_s=0) == ""


def test_a_record_past_its_expiry_is_refused_naming_when() -> None:
    fields = expiry.stamp(-1)
    said = expiry.refusal(fields, clock_skew_s=0)
    assert said.startswith("expired at ") and said.endswith(": not done"), said
    assert "(issued 20" in said


def test_the_clock_skew_is_allowed_for() -> None:
    assert expiry.refusal(expiry.stamp(-10), clock_skew_s=60) == ""
    assert expiry.refusal(expiry.stamp(-61), clock_skew_s=60) != ""


def test_a_record_of_a_sender_before_expiry_never_expires() -> None:
    assert expiry.refusal({"issued_at": 0, "expires_at": 0}, clock_skew_s=0) == ""
    assert expiry.refusal({}, clock_skew_s=0) == ""
