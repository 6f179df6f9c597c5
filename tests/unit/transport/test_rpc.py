"""Error codes of command replies: what each failure answers, and replies of servers from
before codes."""

from __future__ import annotations

import pytest

from blockferry.core.errors import (
    BlockferryError,
    ConfigError,
    CorruptionError,
    LockBusy,
    RepositoryFull,
    RestorePointNotFound,
)
from blockferry.transport.records import Reply
from blockferry.transport.rpc import ErrorCode, RemoteError, code_of


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (RestorePointNotFound("no committed restore point"), ErrorCode.NOT_FOUND),
        (LockBusy("gc holds the lock"), ErrorCode.CONFLICT),
        (ConfigError("invalid job name"), ErrorCode.REFUSED),
        (BlockferryError("unknown command"), ErrorCode.REFUSED),
        (RepositoryFull("no room left"), ErrorCode.UNAVAILABLE),
        (CorruptionError("bad checksum"), ErrorCode.INTERNAL),
        (KeyError("restore_point"), ErrorCode.INTERNAL),
    ],
)
def test_each_failure_answers_its_code(exc: BaseException, code: ErrorCode) -> None:
    assert code_of(exc) is code


def reply(**fields: str) -> Reply:
    return Reply(correlation_id="c", name="gc", ok=False, error="no", **fields)


def test_a_reply_names_its_code() -> None:
    error = RemoteError.of(reply(code="not-found"))
    assert (error.code, str(error)) == (ErrorCode.NOT_FOUND, "no")


@pytest.mark.parametrize("fields", [{}, {"code": ""}, {"code": "from-a-newer-server"}])
def test_a_reply_without_a_known_code_is_internal(fields: dict[str, str]) -> None:
    """A server from before codes, or a newer one with a code this caller does not know."""
    assert RemoteError.of(reply(**fields)).code is ErrorCode.INTERNAL
