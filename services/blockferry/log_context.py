"""What a log line is about, and how lines are written.

The session, job and disk of the work under way are kept in context variables, which
asyncio carries into every task started under them; a filter adds them to each record.
``BLOCKFERRY_LOG_FORMAT=json`` (or ``--log-format json``) writes one JSON object a line
with them as fields, for log pipelines; the text format is for people."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("session", "job", "disk")
_ABOUT: dict[str, ContextVar[str | None]] = {
    name: ContextVar(name, default=None) for name in FIELDS
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def about(
    *, session: str | None = None, job: str | None = None, disk: str | None = None
) -> Iterator[None]:
    """Lines logged within the block (and the tasks it starts) are about these; those
    left None keep what an outer block said."""
    given = {"session": session, "job": job, "disk": disk}
    tokens = [(_ABOUT[name], _ABOUT[name].set(value)) for name, value in given.items() if value]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _About(logging.Filter):
    """Adds the session, job and disk of the work under way to a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in FIELDS:
            setattr(record, name, _ABOUT[name].get())
        return True


def configure(level: str, fmt: str) -> None:
    """Log at ``level`` on stderr, as text or as JSON lines (``fmt``), unless logging
    is set up already (a test's)."""
    logging.basicConfig(level=level.upper(), handlers=[handler(fmt, sys.stderr)])


def handler(fmt: str, stream: TextIO) -> logging.Handler:
    """A handler writing to ``stream`` as text or as JSON lines (``fmt``)."""
    found = logging.StreamHandler(stream)
    found.addFilter(_About())
    if fmt == "json":
        found.setFormatter(
            JsonFormatter(
                ["asctime", "levelname", "name", "message", *FIELDS],
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        found.setFormatter(logging.Formatter(TEXT_FORMAT))
    return found
