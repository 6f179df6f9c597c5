"""The shell text that freezes and thaws a guest, run here with LocalShell (no sshd),
and SshShell's refusals that need no SSH server."""

from __future__ import annotations

import asyncio
import math
import shlex
import socket
from pathlib import Path

import asyncssh
import pytest

from blockferry.core.errors import ConfigError, GuestError
from blockferry.guest_proxy.commands import run_local
from blockferry.guest_proxy.guest import (
    ALREADY_FROZEN,
    ALREADY_THAWED,
    LocalShell,
    SshShell,
    freeze_command,
    remote_command,
    thaw_command,
)
from tests.polling import eventually

SESSION = "0123abcd"
TRICKY = 'it\'s "quoted"; $HOME `id` \\ * && exit 9'
"""Shell syntax that must reach the script as plain text."""


def writes(path: Path, text: str = "ran", code: int = 0) -> str:
    """A script that appends ``text`` and a newline to ``path``, then exits with ``code``."""
    return f"printf '%s\\n' {shlex.quote(text)} >> {shlex.quote(str(path))}; exit {code}"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("session", ["0123abcd", "0123abcd.vm-1", "A.b_c-d"])
def test_session_ids_accepted(session: str) -> None:
    assert f"blockferry-frozen-{session}" in freeze_command(session, "true", "true", 5)
    assert f"blockferry-frozen-{session}" in thaw_command(session, "true")


@pytest.mark.parametrize(
    "session", ["", "../etc", "a/b", "a b", "$(id)", "-rf", ".hidden", "abc\n", "x" * 201]
)
def test_bad_session_id_refused(session: str) -> None:
    with pytest.raises(ConfigError, match="bad session id"):
        freeze_command(session, "true", "true", 5)
    with pytest.raises(ConfigError, match="bad session id"):
        thaw_command(session, "true")


@pytest.mark.parametrize("limit", [0, -1, math.nan, math.inf])
def test_bad_freeze_limit_refused(limit: float) -> None:
    with pytest.raises(ConfigError, match="bad freeze limit"):
        freeze_command(SESSION, "true", "true", limit)


async def test_freeze_then_thaw(tmp_path: Path) -> None:
    """Each script runs once, verbatim, in a shell of its own, and its exit code is the
    command's."""
    env = {"TMPDIR": str(tmp_path)}
    pre, post = tmp_path / "pre", tmp_path / "post"
    shell = LocalShell()
    frozen = await shell.run(
        freeze_command(SESSION, writes(pre, TRICKY, 4), writes(post, TRICKY), 60), 10, env
    )
    assert frozen.exit_code == 4, frozen.describe()
    assert (tmp_path / f"blockferry-frozen-{SESSION}").read_text().strip().isdigit()

    thawed = await shell.run(thaw_command(SESSION, writes(post, TRICKY, 5)), 10, env)
    assert thawed.exit_code == 5, thawed.describe()
    assert (lines(pre), lines(post)) == ([TRICKY], [TRICKY])
    assert not (tmp_path / f"blockferry-frozen-{SESSION}").exists()


async def test_no_scripts(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    assert (await run_local(freeze_command(SESSION, None, None, 60), 10, env)).ok
    assert (await run_local(thaw_command(SESSION, None), 10, env)).ok
    assert files(tmp_path) == []


async def test_second_freeze_of_a_session_refused(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    pre, post = tmp_path / "pre", tmp_path / "post"
    command = freeze_command(SESSION, writes(pre), writes(post), 60)
    assert (await run_local(command, 10, env)).ok
    again = await run_local(command, 10, env)
    assert again.exit_code == ALREADY_FROZEN
    assert "already frozen" in again.stderr
    assert (await run_local(thaw_command(SESSION, writes(post)), 10, env)).ok
    assert (lines(pre), lines(post)) == (["ran"], ["ran"])


async def test_thaw_without_freeze_reports_already_thawed(tmp_path: Path) -> None:
    post = tmp_path / "post"
    result = await run_local(thaw_command(SESSION, writes(post)), 10, {"TMPDIR": str(tmp_path)})
    assert result.exit_code == ALREADY_THAWED
    assert "already thawed" in result.stderr
    assert not post.exists()


async def test_thaw_kills_only_its_own_watchdog(tmp_path: Path) -> None:
    """A marker left by a guest that rebooted names a pid that may now be anyone's."""
    other = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        (tmp_path / f"blockferry-frozen-{SESSION}").write_text(f"{other.pid}\n")
        post = tmp_path / "post"
        thawed = await run_local(thaw_command(SESSION, writes(post)), 10, {"TMPDIR": str(tmp_path)})
        assert thawed.ok, thawed.describe()
        assert lines(post) == ["ran"]
        assert other.returncode is None
        await asyncio.sleep(0.2)
        assert other.returncode is None
    finally:
        other.kill()
        await other.wait()


async def test_watchdog_runs_post_thaw_verbatim_and_logs_it(tmp_path: Path) -> None:
    """post-thaw is quoted twice (inside the watchdog inside the freeze command)."""
    env = {"TMPDIR": str(tmp_path)}
    post = tmp_path / "post"
    frozen = await run_local(freeze_command(SESSION, None, writes(post, TRICKY, 3), 0.3), 10, env)
    assert frozen.ok, frozen.describe()
    assert await eventually(lambda: lines(post) == [TRICKY], 5)
    log = tmp_path / f"blockferry-thaw-{SESSION}.log"
    assert await eventually(lambda: "post-thaw ended with exit code 3" in log.read_text(), 5)
    assert "freeze limit of 0.3 s reached" in log.read_text()

    late = await run_local(thaw_command(SESSION, writes(post)), 10, env)
    assert late.exit_code == ALREADY_THAWED
    assert lines(post) == [TRICKY]


async def test_remote_command_quotes_command_and_env() -> None:
    text = remote_command(f"printf '%s|%s' \"$A\" {shlex.quote(TRICKY)}", 5, {"A": TRICKY})
    assert "timeout -s KILL 5.000 " in text
    result = await run_local(text, 10)
    assert result.stdout == f"{TRICKY}|{TRICKY}"


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_remote_command_refuses_bad_time_limit(timeout: float) -> None:
    """0 would be no limit at all to coreutils timeout."""
    with pytest.raises(ConfigError, match="bad time limit"):
        remote_command("true", timeout)


def test_remote_command_refuses_bad_env_name() -> None:
    with pytest.raises(ConfigError, match="bad name"):
        remote_command("true", 5, {"A;rm -rf /": "x"})


def test_describe() -> None:
    assert LocalShell().describe() == "local host"
    shell = SshShell("10.0.0.5", 22, "root", [], Path("known_hosts"), 1.0)
    assert shell.describe() == "root@10.0.0.5:22"


def ssh_shell_to(port: int, tmp_path: Path, connect_timeout: float = 5.0) -> SshShell:
    key = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    (tmp_path / "known_hosts").write_text("")
    return SshShell("127.0.0.1", port, "root", [key], tmp_path / "known_hosts", connect_timeout)


async def test_ssh_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        shell = ssh_shell_to(unused.getsockname()[1], tmp_path)
        with pytest.raises(GuestError, match=r"connecting to guest root@127\.0\.0\.1:\d+: conn"):
            await shell.run("true", 5)


async def test_ssh_connect_timeout(tmp_path: Path) -> None:
    """A listener that never speaks SSH: the login gives up at connect_timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        shell = ssh_shell_to(silent.getsockname()[1], tmp_path, connect_timeout=0.3)
        with pytest.raises(GuestError, match=r"no answer within 0\.3 s"):
            await shell.run("true", 5)
