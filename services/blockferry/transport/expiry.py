"""When tasks and commands stop being worth doing.

Each Task and Command carries when it was issued and when it expires (milliseconds
since the epoch, UTC): the time its sender waits for it, after which the sender has
moved on (a task is offered again, a command's caller has timed out). A record read
after its expiry is refused, never acted on: a consumer group that lost its offsets
reads its topic again from the start, and must not run old restores, prunes or freezes
again. Hosts' clocks may differ by up to the ``kafka.clock_skew_s`` setting.
A record from a sender older than expiry carries 0 and never expires.

The tasks and commands of a session also carry the session's epoch, which counts up
each time an orchestrator runs the session (a restarted orchestrator carries it on
under the next epoch). A :class:`Fence` refuses the records of an epoch older than the
newest it has seen of their session: what an earlier run of the session sent and is
read late is never acted on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

REFUSALS = ("expired", "superseded")
"""Why a task or command is refused: read after its expiry, or sent by a run of its
session that a newer run replaced (the reason label of the refusal metrics)."""


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


class Epoch(NamedTuple):
    """A session and the epoch of its run that sends a record."""

    session_id: str
    epoch: int


class Fence:
    """The newest epoch read of each session (of the last ``sessions`` sessions): a
    record of an older epoch is refused."""

    def __init__(self, sessions: int = 10000) -> None:
        self._newest: OrderedDict[str, int] = OrderedDict()
        self._sessions = sessions

    def refusal(self, session_id: str, epoch: int) -> str:
        """Why a record of ``session_id``'s ``epoch`` must not be acted on, or "" (and
        ``epoch`` is the newest seen). Records without a session or an epoch (sent by
        roles before epochs, or about no session) pass."""
        if not session_id or not epoch:
            return ""
        newest = self._newest.get(session_id, 0)
        if epoch < newest:
            return (
                f"sent by run {epoch} of session {session_id}, which run {newest} replaced:"
                " not done"
            )
        self._newest[session_id] = epoch
        self._newest.move_to_end(session_id)
        while len(self._newest) > self._sessions:
            self._newest.popitem(last=False)
        return ""
