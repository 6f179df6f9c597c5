"""Names and ids used in repository paths, and the one time format.

Job, disk and session names become directory and file names, so they are
validated before any path is built from them: ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``
cannot climb out of the repository (no ``/``, no leading dot).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from blockferry.core.errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PACK_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
RESTORE_POINT_ID_PATTERN = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")

PACK_ID_BYTES = 16


def validate_name(what: str, value: str) -> str:
    """Return ``value`` if it is a valid job, disk or session name, else raise ConfigError."""
    if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
        raise ConfigError(
            f"invalid {what} name {value!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def is_name(value: str) -> bool:
    """Whether ``value`` is a valid job, disk or session name."""
    return NAME_PATTERN.fullmatch(value) is not None


def new_pack_id() -> str:
    """A random pack id: 32 lowercase hex characters."""
    return secrets.token_hex(PACK_ID_BYTES)


def is_pack_id(value: str) -> bool:
    """Whether ``value`` has the form of a pack id."""
    return PACK_ID_PATTERN.fullmatch(value) is not None


def new_restore_point_id(now: datetime) -> str:
    """A sortable restore point id: UTC time and 8 random hex, ``20261126T231500Z-1a2b3c4d``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def is_restore_point_id(value: str) -> bool:
    """Whether ``value`` has the form of a restore point id."""
    return RESTORE_POINT_ID_PATTERN.fullmatch(value) is not None


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``: ``2026-11-26T23:15:00.000000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse a time written by :func:`format_time`; raises ValueError when malformed."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return moment.astimezone(UTC)
