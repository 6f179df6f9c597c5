"""When tasks and commands stop being worth doing.

Each Task and Command carries when it was issued and when it expires (milliseconds
since the epoch, UTC): the time its sender waits for it, after which the sender has
moved on (a task is offered again, a command's caller has timed out). A record read
after its expiry is refused, never acted on: a consumer group that lost its offsets
reads its topic again from the start, and must not run old restores, prunes or freezes
again. Hosts' clocks may differ by up to the ``kafka.clock_skew_s`` setting.
A record from a sender older than expiry carries 0 and never expires.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


def now_ms() -> int:
    return int(time.time() * 1000)


def stamp(ttl_s: float) -> dict[str, int]:
    """The issue and expiry fields of a record worth doing for ``ttl_s`` seconds."""
    issued = now_ms()
    return {"issued_at": issued, "expires_at": issued + int(ttl_s * 1000)}


class Expiring(Protocol):
    """A record that carries its issue time and expiry (Task, Command)."""

    @property
    def issued_at(self) -> int: ...

    @property
    def expires_at(self) -> int: ...


def refusal(record: Expiring, clock_skew_s: float) -> str:
    """Why a task or command must not be done (it expired), or ""."""
    expires = record.expires_at
    if not expires or now_ms() <= expires + clock_skew_s * 1000:
        return ""
    issued = record.issued_at
    return f"expired at {_iso(expires)} (issued {_iso(issued)}): not done"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
