"""A real Samba server for tests: ``smbd`` on 127.0.0.1 and a free port, everything it
keeps (config, passdb and secrets, locks, state, cache, pid, log) and the one share it
serves in a directory of its own, one user with a random password. The user is the one
running the tests (an SMB user must be a Unix account). Started as a child process in
the foreground and stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockferry.repository.smb_storage import SmbLocation, SmbStorage
from tests.system import free_port, stop_process, unavailable

SHARE = "repo"
START_TIMEOUT_S = 20.0
START_ATTEMPTS = 3
"""A free port can be taken by someone else before smbd binds it: try another."""


@dataclass(frozen=True)
class SambaServer:
    host: str
    port: int
    share: str
    user: str
    password: str = field(repr=False)
    share_dir: Path
    """The directory the share serves: what the server's file system holds."""
    log: Path
    """smbd's own log (its stdout): why it refused a login or a request."""

    def location(self, prefix: str = "repo/") -> SmbLocation:
        return SmbLocation(self.host, self.port, self.share, prefix, self.user)

    def storage(self, prefix: str = "repo/", **options: Any) -> SmbStorage:
        """The SMB backend under ``prefix`` of the share, with the user's password."""
        return SmbStorage(self.location(prefix), password=self.password, **options)


def check_available() -> None:
    """Stop the test (:func:`tests.system.unavailable`) unless smbd can run here."""
    absent = [command for command in ("smbd", "smbpasswd") if _which(command) is None]
    if absent:
        unavailable(
            f"{', '.join(absent)} not installed (Debian: samba; as root,"
            " compose/local/test-deps.sh installs it)"
        )
    if os.geteuid() != 0:
        unavailable("smbd serves a share only when run as root")


@contextlib.contextmanager
def running_samba(directory: Path) -> Iterator[SambaServer]:
    """An smbd serving until the block ends, its files in the existing ``directory``."""
    check_available()
    user = pwd.getpwuid(os.getuid()).pw_name
    password = secrets.token_urlsafe(18)
    share_dir = directory / "share"
    share_dir.mkdir()
    errors = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        state = directory / f"state-{attempt}"
        state.mkdir()
        config = _write_config(directory, state, port, user, share_dir)
        _add_user(config, user, password)
        log = directory / f"smbd-{attempt}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    _command("smbd"),
                    "--foreground",
                    "--no-process-group",  # it has one of its own: start_new_session
                    "--debug-stdout",
                    "--debuglevel=1",
                    f"--configfile={config}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # stopping, smbd signals its whole process group: its own, never pytest's
                start_new_session=True,
            )
        try:
            if _wait_ready(process, port):
                yield SambaServer("127.0.0.1", port, SHARE, user, password, share_dir, log)
                return
            errors.append(f"attempt {attempt} (port {port}): {log.read_text()[-2000:]}")
        finally:
            _stop(process)
    raise RuntimeError("could not start smbd for the tests:\n" + "\n".join(errors))


def _write_config(directory: Path, state: Path, port: int, user: str, share_dir: Path) -> Path:
    config = directory / f"smb-{port}.conf"
    config.write_text(
        "\n".join(
            [
                "[global]",
                "server role = standalone server",
                f"smb ports = {port}",
                "interfaces = 127.0.0.1",
                "bind interfaces only = yes",
                "disable netbios = yes",
                f"lock directory = {state / 'lock'}",
                f"state directory = {state / 'state'}",
                f"cache directory = {state / 'cache'}",
                f"private dir = {state / 'private'}",
                f"pid directory = {state / 'run'}",
                f"ncalrpc dir = {state / 'ncalrpc'}",
                f"log file = {state / 'log.%m'}",
                f"passdb backend = tdbsam:{state / 'private' / 'passdb.tdb'}",
                "usershare path =",
                "load printers = no",
                "printing = bsd",
                "printcap name = /dev/null",
                "disable spoolss = yes",
                "server min protocol = SMB2_10",
                "server signing = mandatory",
                "server smb encrypt = required",
                "map to guest = never",
                "restrict anonymous = 2",
                # the SMB user is the Unix account running the tests, root too
                "invalid users =",
                # FLUSH is an fsync: what the backend relies on for durable puts
                "strict sync = yes",
                "store dos attributes = no",
                "ea support = no",
                "kernel oplocks = no",
                "",
                f"[{SHARE}]",
                f"path = {share_dir}",
                "read only = no",
                f"valid users = {user}",
                "create mask = 0600",
                "directory mask = 0700",
                "",
            ]
        )
    )
    for sub in ("lock", "state", "cache", "private", "run", "ncalrpc"):
        (state / sub).mkdir(mode=0o700)
    return config


def _add_user(config: Path, user: str, password: str) -> None:
    added = subprocess.run(
        [_command("smbpasswd"), "-c", str(config), "-a", "-s", user],
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0:
        raise RuntimeError(f"smbpasswd could not add {user}: {added.stdout}{added.stderr}")


def _command(name: str) -> str:
    found = _which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


def _which(name: str) -> str | None:
    """``name``'s path, looked for in the sbin directories too (not on every PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether our smbd accepts connections on ``port`` (False: it exited)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return process.poll() is None
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop smbd, then whatever of its process group (its children) outlived it."""
    stop_process(process)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group start_new_session made
