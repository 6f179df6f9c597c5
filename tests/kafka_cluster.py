"""Kafka clusters of the tests: started with the project's own compose/local/kafka.sh
on free loopback ports, one directory each, stopped when their owner process ends."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO_ROOT / "compose" / "local" / "kafka.sh"


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


def _consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free right now (kafka.sh numbers a
    cluster's ports from its first)."""
    for _ in range(100):
        (first,) = _free_ports(1)
        if first + count > 65535:
            continue
        try:
            socks = []
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def kafka_sh(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_kafka(data_dir: Path, timeout_s: int, nodes: int = 1) -> str:
    """Start a cluster of ``nodes`` in ``data_dir``; returns its bootstrap servers. It is
    stopped when this process ends, if not before."""
    first = _consecutive_free_ports(2 * nodes)
    try:
        proc = kafka_sh(
            "up",
            "--nodes",
            str(nodes),
            "--data-dir",
            str(data_dir),
            "--port",
            str(first),
            "--controller-port",
            str(first + nodes),
            "--timeout",
            str(timeout_s),
            # the script's watchdog stops the cluster if this process dies
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


def stop_kafka(data_dir: Path) -> None:
    if (data_dir / "cluster.env").exists():
        kafka_sh("down", "--data-dir", str(data_dir), timeout=90)


@contextmanager
def running_kafka(data_dir: Path, nodes: int, timeout_s: int = 150) -> Iterator[str]:
    """A cluster for the block's time; yields its bootstrap servers."""
    try:
        yield start_kafka(data_dir, timeout_s, nodes)
    finally:
        stop_kafka(data_dir)
