"""Log lines say which session, job and disk they are about; JSON lines carry them as
fields, into the tasks started under them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from blockferry import log_context


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The lines logged as JSON, read back; the root logger as it was after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    log_context.configure("INFO", "json")
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    written = io.StringIO()
    handler.setStream(written)
    yield lambda: [json.loads(line) for line in written.getvalue().splitlines()]
    root.handlers[:], level = saved
    root.setLevel(level)


async def test_a_line_carries_the_session_job_and_disk_it_is_about(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    log = logging.getLogger("blockferry.test")
    log.info("before")
    with log_context.about(session="s1", job="vm"):
        with log_context.about(disk="root"):
            # a task started here carries them too
            await asyncio.create_task(_log_in_a_task(log))
        log.info("after the disk")
    log.info("outside")
    lines = json_lines()
    assert [(x["message"], x["session"], x["job"], x["disk"]) for x in lines] == [
        ("before", None, None, None),
        ("in a task", "s1", "vm", "root"),
        ("after the disk", "s1", "vm", None),
        ("outside", None, None, None),
    ]
    assert {"time", "level", "logger"} <= set(lines[0])
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "blockferry.test"


async def _log_in_a_task(log: logging.Logger) -> None:
    log.info("in a task")
