"""Real system resources for tests: a small tmpfs (a file system that fills up) and a
loop block device, both needing root, and the one way a test says that a tool or root is
missing here (:func:`unavailable`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

TOOLS_DIR = Path(
    os.environ.get("BLOCKFERRY_TOOLS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "blockferry/tools"
)
"""Where compose/local/tools.sh keeps the tools it builds (MinIO, Helm, Kubernetes)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (another process may take it
    before the caller binds it: servers started on it are retried on another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def signal_and_wait(pid: int, sig: int, timeout: float) -> None:
    """Send ``sig`` to a process that is not this one's child and wait until it is gone
    (or a zombie its parent has yet to reap)."""
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _state(pid) not in ("gone", "Z"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} outlived signal {sig} by {timeout:.0f} s")
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server the tests started: SIGTERM, then SIGKILL after ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def unavailable(reason: str) -> NoReturn:
    """Stop a test that cannot run here for want of a tool or of root: skipped, saying
    why, except under CI (``CI=true``), which must run every test, where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)


def need_commands(package: str, *commands: str) -> None:
    """Stop the test (see :func:`unavailable`) unless every one of ``commands``, from the
    Debian ``package``, is installed."""
    absent = [command for command in commands if shutil.which(command) is None]
    if absent:
        unavailable(
            f"{', '.join(absent)} not installed (Debian: {package}; as root,"
            " compose/local/test-deps.sh installs it)"
        )


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "8m") mounted on a new directory ``path``."""
    path.mkdir()
    need_commands("mount", "mount", "umount")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[Path]:
    """A loop block device over the file ``backing``, detached afterwards."""
    need_commands("mount", "losetup")
    attached = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if attached.returncode != 0:
        unavailable(f"cannot attach a loop device (needs root): {attached.stderr.strip()}")
    device = Path(attached.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False)
