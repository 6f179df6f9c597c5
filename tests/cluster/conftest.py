"""A Kafka cluster of three nodes (replication 3, min ISR 2) for the tests of this
directory, started with the local runner like the session's single broker, one per test
module: the tests kill, restart and pause its nodes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.conftest import KAFKA_SH
from tests.system import unavailable

NODES = 3
START_TIMEOUT_S = 150


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def _kafka_sh(*args: str, timeout: float = START_TIMEOUT_S + 60) -> str:
    proc = subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"kafka.sh {args[0]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


class KafkaCluster:
    """The nodes of a local three-node cluster, to kill, restart, pause and resume."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.bootstrap = ""

    def up(self) -> None:
        """Start every node that is not running and wait until all are ready."""
        args = ["up", "--data-dir", str(self.data_dir), "--timeout", str(START_TIMEOUT_S)]
        if not (self.data_dir / "cluster.env").exists():
            port = _free_run(2 * NODES)
            args += ["--nodes", str(NODES), "--port", str(port)]
            args += ["--controller-port", str(port + NODES), "--owner-pid", str(os.getpid())]
        self.bootstrap = _kafka_sh(*args)

    def down(self) -> None:
        self.resume()
        _kafka_sh("down", "--data-dir", str(self.data_dir), timeout=120)

    def pid(self, node: int) -> int | None:
        try:
            pid = int((self.data_dir / f"node-{node}" / "kafka.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop(self, node: int, sig: int = signal.SIGKILL, timeout: float = 60) -> None:
        """Send ``sig`` to a node (SIGKILL: it dies at once; SIGTERM: a controlled shutdown
        that moves its leaderships away first) and wait until it is gone."""
        pid = self.pid(node)
        assert pid is not None, f"node {node} is not running"
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            assert time.monotonic() < deadline, f"node {node} (pid {pid}) did not stop"
            time.sleep(0.2)

    def pause(self) -> None:
        """SIGSTOP every node: the cluster is unreachable, connections stay open."""
        for node in range(1, NODES + 1):
            pid = self.pid(node)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for node in range(1, NODES + 1):
            pid = self.pid(node)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition → node id of its leader."""

        async def describe() -> dict[int, int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
                return {p["partition"]: p["leader"] for p in described["partitions"]}
            finally:
                await admin.close()

        return asyncio.run(describe())

    def replication(self, topic: str) -> tuple[int, str]:
        """(the fewest replicas of any partition, min.insync.replicas) of ``topic``."""

        async def describe() -> tuple[int, str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
                (response,) = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
                )
                ((entry,),) = [r["config_entries"] for r in response.to_object()["resources"]]
                replicas = min(len(p["replicas"]) for p in described["partitions"])
                return replicas, entry["config_value"]
            finally:
                await admin.close()

        return asyncio.run(describe())

    def broker_config(self, node: int, name: str) -> str:
        """A broker setting of ``node``, as the node reports it."""

        async def describe() -> str:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                (response,) = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.BROKER, str(node), {name: None})]
                )
                ((entry,),) = [r["config_entries"] for r in response.to_object()["resources"]]
                return str(entry["config_value"])
            finally:
                await admin.close()

        return asyncio.run(describe())

    def elect_preferred_leaders(self) -> str:
        """Move every partition's leadership back to its preferred replica (Kafka's
        LeaderElectionCommand), as an operator does after a node came back."""
        lib = KAFKA_SH.parent / "target" / "lib"
        proc = subprocess.run(
            [
                "java",
                "-Xmx128m",
                "-cp",
                f"{lib}/*",
                f"-Dlog4j2.configurationFile={KAFKA_SH.parent / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir}",
                "-Dblockferry.log.file=tools.log",
                "org.apache.kafka.tools.LeaderElectionCommand",
                "--bootstrap-server",
                self.bootstrap,
                "--election-type",
                "PREFERRED",
                "--all-topic-partitions",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Kafka nodes for the tests of one module; killed or paused nodes are
    restarted and resumed by each test (and the cluster stopped at the end)."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka3-", numbered=True))
    try:
        cluster.up()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        cluster.down()
        if "java not found" in str(exc) or "maven" in str(exc):
            unavailable(f"cannot start a three-node Kafka here: {exc}")
        raise
    try:
        yield cluster
    finally:
        cluster.down()
