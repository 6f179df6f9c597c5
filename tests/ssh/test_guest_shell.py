"""Guest scripts over SSH against a real sshd, and the freeze limit kept by the guest.

The scripts write to files in the test's directory: that is how a test sees what ran on
the "guest" (here, this machine through sshd) and how often.
"""

from __future__ import annotations

import dataclasses
import secrets
import shlex
from pathlib import Path

import pytest

from blockferry.core.errors import GuestError
from blockferry.guest_proxy.guest import (
    ALREADY_THAWED,
    LocalShell,
    Shell,
    SshShell,
    freeze_command,
    thaw_command,
)
from tests.polling import eventually
from tests.sshd import SshServer, generate_key, known_hosts_line

pytestmark = pytest.mark.ssh

LIMIT_S = 2.0
"""A freeze limit short enough for the tests to wait for."""


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaped has ended too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def runs(path: Path) -> int:
    """How many times a script appended its line to ``path``."""
    return len(path.read_text().splitlines()) if path.exists() else 0


@dataclasses.dataclass
class Guest:
    """One freeze: its session, the scripts (counting their runs) and where they write."""

    directory: Path
    session: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))

    @property
    def env(self) -> dict[str, str]:
        # the freeze marker and the thaw log go into the test's directory
        return {"TMPDIR": str(self.directory)}

    @property
    def marker(self) -> Path:
        return self.directory / f"blockferry-frozen-{self.session}"

    @property
    def thaw_log(self) -> Path:
        return self.directory / f"blockferry-thaw-{self.session}.log"

    def freeze(self, limit_s: float, pre_freeze_extra: str = "") -> str:
        pre = f"echo pre >> {shlex.quote(str(self.directory / 'pre.runs'))}{pre_freeze_extra}"
        return freeze_command(self.session, pre, self.post_thaw, limit_s)

    def thaw(self) -> str:
        return thaw_command(self.session, self.post_thaw)

    @property
    def post_thaw(self) -> str:
        return f"echo post >> {shlex.quote(str(self.directory / 'post.runs'))}"

    @property
    def pre_runs(self) -> int:
        return runs(self.directory / "pre.runs")

    @property
    def post_runs(self) -> int:
        return runs(self.directory / "post.runs")


async def test_exit_code_and_output_come_back(ssh_shell: SshShell) -> None:
    result = await ssh_shell.run("echo out; echo err >&2; exit 3", timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out
    assert ssh_shell.describe() == f"{ssh_shell.user}@127.0.0.1:{ssh_shell.port}"


async def test_env_arrives_quoted(ssh_shell: SshShell) -> None:
    value = 'it\'s "quoted"; $HOME `id` \\ *'
    result = await ssh_shell.run('printf %s "$VALUE"', timeout=10, env={"VALUE": value})
    assert result.ok, result.describe()
    assert result.stdout == value


async def test_stdin_is_closed(ssh_shell: SshShell) -> None:
    """A script that reads its input gets end-of-file, rather than hanging."""
    result = await ssh_shell.run("cat; echo done", timeout=10)
    assert (result.exit_code, result.stdout) == (0, "done\n")


async def test_hung_command_is_killed_on_the_guest(ssh_shell: SshShell, tmp_path: Path) -> None:
    command = f"echo $$ > {tmp_path}/shell.pid; sleep 60 & echo $! > {tmp_path}/sleep.pid; wait"
    result = await ssh_shell.run(command, timeout=1)
    assert result.timed_out
    assert result.exit_code is None
    # the guest ended it at its limit: the client did not wait for its own, later bound
    assert result.seconds < 5
    pids = [int((tmp_path / name).read_text()) for name in ("shell.pid", "sleep.pid")]
    assert await eventually(lambda: all(gone(pid) for pid in pids), 5), f"{pids} still run"


async def test_unknown_host_key_is_refused(
    sshd: SshServer, ssh_shell: SshShell, tmp_path: Path
) -> None:
    other_key = generate_key(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(sshd.host, sshd.port, other_key))
    shell = dataclasses.replace(ssh_shell, known_hosts=known_hosts)
    with pytest.raises(GuestError, match="host key not in known hosts file"):
        await shell.run(f"touch {tmp_path}/ran", timeout=10)
    assert not (tmp_path / "ran").exists()


async def test_wrong_client_key_is_refused(ssh_shell: SshShell, tmp_path: Path) -> None:
    generate_key(tmp_path / "id_other")
    shell = dataclasses.replace(ssh_shell, client_keys=[tmp_path / "id_other"])
    with pytest.raises(GuestError, match="authentication refused for client key"):
        await shell.run(f"touch {tmp_path}/ran", timeout=10)
    assert not (tmp_path / "ran").exists()


async def test_freeze_then_thaw_runs_each_script_once(ssh_shell: SshShell, tmp_path: Path) -> None:
    guest = Guest(tmp_path)
    frozen = await ssh_shell.run(guest.freeze(60), timeout=10, env=guest.env)
    assert frozen.ok, frozen.describe()
    watchdog = int(guest.marker.read_text())
    assert not gone(watchdog)
    assert (guest.pre_runs, guest.post_runs) == (1, 0)

    thawed = await ssh_shell.run(guest.thaw(), timeout=10, env=guest.env)
    assert thawed.ok, thawed.describe()
    assert (guest.pre_runs, guest.post_runs) == (1, 1)
    assert not guest.marker.exists()
    assert await eventually(lambda: gone(watchdog), 5), "the watchdog still runs"
    assert not guest.thaw_log.exists()


async def test_guest_thaws_itself_at_the_freeze_limit(ssh_shell: SshShell, tmp_path: Path) -> None:
    """The SSH connection is closed after the freeze: the guest still thaws, once."""
    guest = Guest(tmp_path)
    frozen = await ssh_shell.run(guest.freeze(LIMIT_S), timeout=10, env=guest.env)
    assert frozen.ok, frozen.describe()
    watchdog = int(guest.marker.read_text())
    assert guest.post_runs == 0

    assert await eventually(lambda: guest.post_runs == 1, LIMIT_S + 5)
    assert await eventually(lambda: gone(watchdog), 5)
    assert "freeze limit of 2 s reached" in guest.thaw_log.read_text()

    late = await ssh_shell.run(guest.thaw(), timeout=10, env=guest.env)
    assert late.exit_code == ALREADY_THAWED, late.describe()
    assert "already thawed" in late.stderr
    assert (guest.pre_runs, guest.post_runs) == (1, 1)


@pytest.mark.parametrize("shell_kind", ["local", "ssh"])
async def test_freeze_limit_outlives_a_killed_caller(
    shell_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Pre-freeze hangs past the command's time limit: the caller's process group is
    killed (locally) or the guest kills the command's (over SSH); the detached watchdog
    lives on and thaws the guest at the freeze limit."""
    shell: Shell = LocalShell() if shell_kind == "local" else request.getfixturevalue("ssh_shell")
    guest = Guest(tmp_path)
    frozen = await shell.run(guest.freeze(LIMIT_S, "; sleep 30"), timeout=1, env=guest.env)
    assert frozen.timed_out
    assert (guest.pre_runs, guest.post_runs) == (1, 0)

    assert await eventually(lambda: guest.post_runs == 1, LIMIT_S + 5)
    late = await shell.run(guest.thaw(), timeout=10, env=guest.env)
    assert late.exit_code == ALREADY_THAWED, late.describe()
    assert (guest.pre_runs, guest.post_runs) == (1, 1)
