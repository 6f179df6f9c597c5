"""Where a guest's scripts run (here, or on the guest over SSH) and the shell text that
freezes and thaws it.

A freeze must end even if the guest-proxy dies while the guest is frozen, so the time
limit is kept on the guest itself: the freeze starts a detached watchdog there that runs
the post-thaw script when the limit expires. Whoever thaws first (the watchdog or the
thaw command) removes the guest's freeze marker; only the one whose ``rm`` succeeds runs
post-thaw, so it runs exactly once.

Scripts are shell command lines given by the operator. They are embedded with
:func:`shlex.quote` and run by ``/bin/sh -c``; guests are Linux with coreutils
(``timeout``, ``sleep``, ``dd``) and util-linux (``setsid``).
"""

from __future__ import annotations

import math
import re
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncssh

from blockferry.core.errors import ConfigError, GuestError
from blockferry.guest_proxy.commands import CommandResult, run_local, tail

ALREADY_THAWED = 75
"""Exit code of :func:`thaw_command` when the guest's watchdog thawed it already (the
freeze limit expired): post-thaw is not run again."""

ALREADY_FROZEN = 76
"""Exit code of :func:`freeze_command` when the session's freeze marker exists already:
nothing is run, so pre-freeze does not run twice for one session."""

CLIENT_GRACE_S = 10.0
"""How much longer than a command's time limit the SSH client waits for its end: the
guest kills it at the limit, this only covers a guest that cannot."""

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""A session id (hex, maybe with a VM name after a dot): safe in a file name and in shell
text without quoting."""

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Shell(Protocol):
    """Runs a command line with ``/bin/sh -c`` somewhere, killed at ``timeout`` seconds."""

    def describe(self) -> str:
        """Where commands run, for messages: ``root@10.0.0.5:22``, ``local host``."""
        ...

    async def run(
        self, command: str, timeout: float, env: dict[str, str] | None = None
    ) -> CommandResult: ...


@dataclass(frozen=True)
class LocalShell:
    """The guest-proxy's own host (a guest-proxy placed in the guest)."""

    def describe(self) -> str:
        return "local host"

    async def run(
        self, command: str, timeout: float, env: dict[str, str] | None = None
    ) -> CommandResult:
        return await run_local(command, timeout, env)


@dataclass(frozen=True)
class SshShell:
    """A guest reached over SSH: key authentication only, and the guest's host key must be
    in ``known_hosts``. One connection per command: commands are few and far apart."""

    host: str
    port: int
    user: str
    client_keys: list[Path]
    known_hosts: Path
    connect_timeout: float

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    async def run(
        self, command: str, timeout: float, env: dict[str, str] | None = None
    ) -> CommandResult:
        """Run ``command`` on the guest. The guest kills it (and what it started, except
        what detached itself with ``setsid``) at ``timeout`` seconds, so a hung script
        does not outlive its limit even when this side gives up or dies."""
        remote = remote_command(command, timeout, env)
        conn = await self._connect()
        async with conn:
            started = time.monotonic()
            try:
                done = await conn.run(
                    remote,
                    check=False,
                    timeout=timeout + CLIENT_GRACE_S,
                    stdin=asyncssh.DEVNULL,
                    encoding=None,
                )
            except asyncssh.TimeoutError as exc:
                return CommandResult(
                    None,
                    tail(_as_bytes(exc.stdout)),
                    tail(_as_bytes(exc.stderr)),
                    time.monotonic() - started,
                    timed_out=True,
                )
            except (asyncssh.Error, OSError) as exc:
                raise GuestError(
                    f"running a command on guest {self.describe()}: {_reason(exc)}"
                ) from exc
        seconds = time.monotonic() - started
        code = done.returncode
        # `timeout -s KILL` kills its own process group, itself included: the command
        # ends by SIGKILL (or 128 + 9, from a login shell that did not exec it)
        killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        return CommandResult(
            code if code is not None and 0 <= code and not killed else None,
            tail(_as_bytes(done.stdout)),
            tail(_as_bytes(done.stderr)),
            seconds,
            timed_out=killed and seconds >= timeout,
        )

    async def _connect(self) -> asyncssh.SSHClientConnection:
        where = f"connecting to guest {self.describe()}"
        try:
            return await asyncssh.connect(
                self.host,
                self.port,
                username=self.user,
                client_keys=[str(key) for key in self.client_keys],
                known_hosts=str(self.known_hosts),
                connect_timeout=self.connect_timeout,
                # only the settings given here: no ~/.ssh/config, agent or password
                config=None,
                agent_path=None,
                preferred_auth="publickey",
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise GuestError(
                f"{where}: host key not in known hosts file {self.known_hosts}"
                f" (or a different key is listed there): {exc.reason}"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            keys = ", ".join(str(key) for key in self.client_keys)
            raise GuestError(
                f"{where}: authentication refused for client key(s) {keys}: {exc.reason}"
            ) from exc
        except ConnectionRefusedError as exc:
            raise GuestError(f"{where}: connection refused") from exc
        except TimeoutError as exc:
            raise GuestError(f"{where}: no answer within {self.connect_timeout:g} s") from exc
        except (asyncssh.Error, asyncssh.KeyImportError, OSError, ValueError) as exc:
            raise GuestError(f"{where}: {_reason(exc)}") from exc


def remote_command(command: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """The command line sent to the guest: ``command`` under coreutils ``timeout``, with
    ``env`` set by ``env NAME=value`` (sshd's AcceptEnv is usually off)."""
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"running a command on a guest: bad time limit {timeout!r}")
    assignments = []
    for name, value in (env or {}).items():
        if not ENV_NAME.fullmatch(name):
            raise ConfigError(f"passing environment variable {name!r} to a guest: bad name")
        assignments.append(f"{name}={shlex.quote(value)}")
    words = ["env", *assignments] if assignments else []
    words += ["timeout", "-s", "KILL", _seconds(timeout), "/bin/sh", "-c", shlex.quote(command)]
    return " ".join(words)


def freeze_command(
    session_id: str, pre_freeze: str | None, post_thaw: str | None, limit_s: float
) -> str:
    """Shell text that freezes a guest: it creates the session's freeze marker, starts
    the guest's watchdog (which thaws the guest after ``limit_s`` seconds unless
    :func:`thaw_command` did first) and then runs ``pre_freeze``, ending with its exit
    code. Whatever pre-freeze did, the caller must thaw once the freeze has started.

    The watchdog is detached (``setsid``, in a session and process group of its own, its
    standard streams away from the caller's): it survives the SSH session closing, the
    ``timeout`` around this command and the death of the caller's process group. Its pid
    is stored in the marker so that a thaw can stop it."""
    _check_session_id(session_id)
    if not (math.isfinite(limit_s) and limit_s > 0):
        raise ConfigError(f"freezing session {session_id}: bad freeze limit {limit_s!r}")
    # run as: sh -c WATCHDOG blockferry-watchdog MARKER LOG
    watchdog = "\n".join(
        [
            f"sleep {_seconds(limit_s)}",
            # a thaw removed the marker first: it runs post-thaw, not this
            'rm "$1" 2>/dev/null || exit 0',
            'exec >>"$2" 2>&1',
            f'echo "blockferry: freeze limit of {limit_s:g} s reached at'
            ' $(date -u +%Y-%m-%dT%H:%M:%SZ): thawing"',
            _run_script(post_thaw),
            'echo "blockferry: post-thaw ended with exit code $?"',
        ]
    )
    return "\n".join(
        [
            *_paths(session_id),
            # noclobber: created here or refused, atomically
            'if ! (set -C; : >"$marker"); then',
            '  if [ -e "$marker" ]; then',
            f'    echo "blockferry: session {session_id} is already frozen ($marker exists)" >&2',
            f"    exit {ALREADY_FROZEN}",
            "  fi",
            "  exit 1",
            "fi",
            f"setsid nohup /bin/sh -c {shlex.quote(watchdog)} blockferry-watchdog"
            ' "$marker" "$log" </dev/null >/dev/null 2>&1 &',
            "watchdog=$!",
            # conv=nocreat: write into the marker only while it exists; a watchdog that
            # already thawed must not find it re-created for a second thaw
            'echo "$watchdog" | dd of="$marker" conv=nocreat 2>/dev/null',
            _run_script(pre_freeze),
        ]
    )


def thaw_command(session_id: str, post_thaw: str | None) -> str:
    """Shell text that thaws a guest frozen by :func:`freeze_command`: it removes the
    freeze marker, stops the watchdog and runs ``post_thaw``, ending with its exit code.
    No marker to remove means the watchdog thawed the guest already (the freeze limit
    expired): it then prints so and exits with :data:`ALREADY_THAWED`."""
    _check_session_id(session_id)
    return "\n".join(
        [
            *_paths(session_id),
            'watchdog=$(cat "$marker" 2>/dev/null)',
            'if ! rm "$marker" 2>/dev/null; then',
            f'  echo "blockferry: session {session_id} was already thawed by the guest'
            ' when its freeze limit expired (its output: $log)" >&2',
            f"  exit {ALREADY_THAWED}",
            "fi",
            # the watchdog leads its own process group: its sleep goes with it. Only if
            # that pid is still our watchdog (after a guest reboot it may be anyone's)
            'case "$watchdog" in',
            "  ''|*[!0-9]*) ;;",
            """  *) if tr '\\0' '\\n' <"/proc/$watchdog/cmdline" 2>/dev/null |""",
            '       grep -qxF -- "$marker"; then',
            '       kill -KILL -"$watchdog" 2>/dev/null',
            "     fi ;;",
            "esac",
            _run_script(post_thaw),
        ]
    )


def _paths(session_id: str) -> list[str]:
    return [
        f'marker="${{TMPDIR:-/tmp}}/blockferry-frozen-{session_id}"',
        f'log="${{TMPDIR:-/tmp}}/blockferry-thaw-{session_id}.log"',
    ]


def _run_script(script: str | None) -> str:
    """A script in a shell of its own: its ``exit`` or ``set -e`` ends only itself."""
    return f"/bin/sh -c {shlex.quote(script)}" if script else ":"


def _seconds(duration: float) -> str:
    """For timeout and sleep, never 0 (to timeout, no limit at all)."""
    return f"{max(duration, 0.001):.3f}"


def _check_session_id(session_id: str) -> None:
    if not SESSION_ID.fullmatch(session_id):
        raise ConfigError(f"naming a guest freeze marker: bad session id {session_id!r}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _as_bytes(data: object) -> bytes:
    return data if isinstance(data, bytes) else b""
