"""Log lines say which session, job and disk they are about; JSON lines carry them as
fields, into the tasks started under them."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from blockferry import log_context


async def test_a_line_carries_the_session_job_and_disk_it_is_about() -> None:
    written = io.StringIO()
    log = logging.getLogger("blockferry.test.log_context")
    log.addHandler(log_context.handler("json", written))
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("before")
    with log_context.about(session="s1", job="vm"):
        with log_context.about(disk="root"):
            # a task started here carries them too
            await asyncio.create_task(_log_in_a_task(log))
        log.info("after the disk")
    log.info("outside")
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [(x["message"], x["session"], x["job"], x["disk"]) for x in lines] == [
        ("before", None, None, None),
        ("in a task", "s1", "vm", "root"),
        ("after the disk", "s1", "vm", None),
        ("outside", None, None, None),
    ]
    assert {"time", "level", "logger"} <= set(lines[0])
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == log.name


async def _log_in_a_task(log: logging.Logger) -> None:
    log.info("in a task")
