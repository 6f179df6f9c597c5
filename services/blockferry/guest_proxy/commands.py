"""Running a command (a guest script, a snapshot hook) and keeping what it printed.

A command is a shell command line, run by ``/bin/sh -c``. Its exit code and the tail of
its output go to the session, so an operator sees why a script failed without logging
in anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

OUTPUT_LIMIT = 16 * 1024
"""Bytes of each stream kept: the tail, where the error usually is."""


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    """None: the command was killed at its time limit (or by a signal)."""
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """One line for the session: how it ended, and the last line it printed."""
        if self.timed_out:
            ended = f"killed after its time limit ({self.seconds:.0f} s)"
        elif self.exit_code is None:
            ended = "killed by a signal"
        else:
            ended = f"exit code {self.exit_code}"
        last = (self.stderr.strip() or self.stdout.strip()).splitlines()[-1:]
        return f"{ended}: {last[0]}" if last else ended


def tail(data: bytes) -> str:
    return data[-OUTPUT_LIMIT:].decode("utf-8", "replace")


async def run_local(
    command: str, timeout: float, env: dict[str, str] | None = None
) -> CommandResult:
    """Run ``command`` here with ``/bin/sh -c``, in a process group of its own that is
    killed (SIGKILL) when ``timeout`` seconds pass. ``env`` is added to this process's
    environment. Processes the command detaches into a new session of their own
    (``setsid``) are not killed: that is how a guest-side watchdog outlives it."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        _kill_group(process.pid)
        stdout, stderr = await process.communicate()
        return CommandResult(None, tail(stdout), tail(stderr), time.monotonic() - started, True)
    except BaseException:
        _kill_group(process.pid)
        raise
    code = process.returncode
    return CommandResult(
        code if code is not None and code >= 0 else None,
        tail(stdout),
        tail(stderr),
        time.monotonic() - started,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
