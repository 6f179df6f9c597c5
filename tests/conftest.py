"""Shared pytest fixtures.

Kafka: one broker per test session, shared by every test that asks for it; each test
names its topics (and consumer groups) with its own ``topic_prefix``. The broker is only
started when a test requests ``kafka_bootstrap``, so unit tests never pay for it.

Set ``BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS`` to use an already running cluster instead
(e.g. ``make kafka-up`` and then ``BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``).

SSH: one real OpenSSH server on 127.0.0.1 per test session, with its own host key and a
client key of its own (``tests/sshd.py``), started only when a test requests ``sshd``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import SshdUnavailable, SshServer, check_available, running_sshd
from tests.system import unavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO_ROOT / "compose" / "local" / "kafka.sh"
BOOTSTRAP_ENV = "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"
# Per attempt; the second attempt (loaded machine) gets more time.
START_TIMEOUTS_S = (90, 150)


def _free_ports(count: int) -> list[int]:
    """Ports that are free right now on 127.0.0.1 (held open together, so distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _kafka_sh(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start_broker(data_dir: Path, timeout_s: int) -> str:
    broker_port, controller_port = _free_ports(2)
    try:
        proc = _kafka_sh(
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(broker_port),
            "--controller-port",
            str(controller_port),
            "--timeout",
            str(timeout_s),
            # the script's watchdog stops the broker if this pytest process dies
            "--owner-pid",
            str(os.getpid()),
            # Maven fetch on a cold cache comes on top of the start-up wait
            timeout=timeout_s + 600,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"kafka.sh up timed out: {e}") from e
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"kafka.sh up failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return lines[-1]


def _stop_broker(data_dir: Path) -> None:
    if (data_dir / "cluster.env").exists():
        _kafka_sh("down", "--data-dir", str(data_dir), timeout=90)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("host:port,...") of a Kafka cluster shared by the session."""
    configured = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        yield configured
        return

    errors: list[str] = []
    for attempt, timeout_s in enumerate(START_TIMEOUTS_S, start=1):
        # fresh directory and ports for every attempt
        data_dir = tmp_path_factory.mktemp(f"kafka-{attempt}-", numbered=True)
        try:
            bootstrap = _start_broker(data_dir, timeout_s)
        except RuntimeError as e:
            errors.append(f"attempt {attempt}: {e}")
            _stop_broker(data_dir)
            continue
        try:
            yield bootstrap
        finally:
            _stop_broker(data_dir)
        return
    pytest.fail("could not start Kafka for the tests:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def topic_prefix() -> str:
    """Unique per test: name topics and consumer groups f"{topic_prefix}.something"."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the session; tests log in as the user running them."""
    try:
        check_available()
    except SshdUnavailable as exc:
        unavailable(f"no SSH server to test against: {exc}")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
