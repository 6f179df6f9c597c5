"""A real OpenSSH server for tests: on 127.0.0.1, a free port, everything (host key,
client key, authorized_keys, known_hosts, config, log) in a directory of its own, for
the current user. Started as a child process and stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.system import free_port, stop_process

SSHD = Path("/usr/sbin/sshd")
"""sshd re-executes itself, so it must be started by its absolute path."""

PRIVSEP_DIR = Path("/run/sshd")
"""sshd run as root refuses to start without its privilege-separation directory."""

START_TIMEOUT_S = 10.0
START_ATTEMPTS = 3
"""A free port can be taken by someone else before sshd binds it: try another."""


class SshdUnavailable(Exception):
    """sshd or ssh-keygen is not installed here."""


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    """Who logs in: the user running the tests."""
    client_key: Path
    """A private key that ``user`` is authorized to log in with."""
    known_hosts: Path
    """Holds the server's host key, for ``[host]:port``."""
    log: Path
    """sshd's own log (its stderr): why it refused a login."""


def generate_key(path: Path) -> str:
    """A new ed25519 key pair at ``path`` (and ``path``.pub); returns the public key as
    ``ssh-ed25519 AAAA...``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "blockferry-test", "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    kind, key = Path(f"{path}.pub").read_text().split()[:2]
    return f"{kind} {key}"


def known_hosts_line(host: str, port: int, public_key: str) -> str:
    return f"[{host}]:{port} {public_key}\n"


def check_available() -> None:
    """Raise :class:`SshdUnavailable`, saying what is missing, if a server cannot run."""
    if not os.access(SSHD, os.X_OK):
        raise SshdUnavailable(f"{SSHD} is not installed (Debian: openssh-server)")
    if shutil.which("ssh-keygen") is None:
        raise SshdUnavailable("ssh-keygen is not installed (Debian: openssh-client)")


@contextlib.contextmanager
def running_sshd(directory: Path) -> Iterator[SshServer]:
    """An sshd serving until the block ends, its files in the existing ``directory``."""
    check_available()
    user = pwd.getpwuid(os.getuid()).pw_name
    host_public = generate_key(directory / "ssh_host_ed25519_key")
    client_public = generate_key(directory / "id_ed25519")
    (directory / "authorized_keys").write_text(client_public + "\n")
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)

    errors = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        config = _write_config(directory, port, user)
        log = directory / f"sshd-{attempt}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            if _wait_ready(process, port):
                known_hosts = directory / "known_hosts"
                known_hosts.write_text(known_hosts_line("127.0.0.1", port, host_public))
                yield SshServer("127.0.0.1", port, user, directory / "id_ed25519", known_hosts, log)
                return
            errors.append(f"attempt {attempt} (port {port}): {log.read_text()[-2000:]}")
        finally:
            stop_process(process)
    raise RuntimeError("could not start sshd for the tests:\n" + "\n".join(errors))


def _write_config(directory: Path, port: int, user: str) -> Path:
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f'HostKey "{directory / "ssh_host_ed25519_key"}"',
                f'PidFile "{directory / "sshd.pid"}"',
                f'AuthorizedKeysFile "{directory / "authorized_keys"}"',
                f"AllowUsers {user}",
                # the test's temporary directories are not root-owned 0755 all the way up
                "StrictModes no",
                "UsePAM no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "PrintMotd no",
                "UseDNS no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    return config


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether our sshd answers with an SSH banner on ``port`` (False: it exited)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-2.0-"):
                return process.poll() is None
        time.sleep(0.05)
    return False
