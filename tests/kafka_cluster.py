"""Kafka clusters of the tests: started with the project's own compose/local/kafka.sh
on free loopback ports, one directory each, stopped when their owner process ends."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.system import signal_and_wait

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


class KafkaCluster:
    """The nodes of a local cluster, to start, kill, restart, pause and resume."""

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 1,
        security: str = "plaintext",
        wan: tuple[int, str] | None = None,
    ) -> None:
        """``wan``: (the first WAN listener port, the address other sites reach it at)."""
        self.data_dir = data_dir
        self.nodes = nodes
        self.security = security
        self.wan = wan
        self.bootstrap = ""

    def up(self, timeout_s: int = 150) -> str:
        """Start every node that is not running and wait until all are ready; returns
        the bootstrap servers. The first start picks free ports, and the cluster is
        stopped when this process ends, if not before."""
        args = ["up", "--data-dir", str(self.data_dir), "--timeout", str(timeout_s)]
        if not (self.data_dir / "cluster.env").exists():
            port = _consecutive_free_ports(2 * self.nodes)
            args += ["--nodes", str(self.nodes), "--port", str(port)]
            args += ["--controller-port", str(port + self.nodes), "--owner-pid", str(os.getpid())]
            args += ["--security", self.security]
        if self.wan is not None:
            args += ["--wan-port", str(self.wan[0]), "--wan-advertise", self.wan[1]]
        try:
            # Maven fetch on a cold cache comes on top of the start-up wait
            proc = kafka_sh(*args, timeout=timeout_s + 600)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"kafka.sh up timed out: {e}") from e
        lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"kafka.sh up failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        self.bootstrap = lines[-1]
        return self.bootstrap

    def client_env(self, user: str = "blockferry-{role}") -> dict[str, str]:
        """The BLOCKFERRY_KAFKA__SECURITY__* settings of a sasl_ssl cluster's ``user``:
        by default each role's own (``{role}`` in them), else e.g. ``admin`` or
        ``blockferry-source-mover``."""
        name = "admin.env" if user == "admin" else "client.env"
        lines = (self.data_dir / "security" / name).read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        return {k: v.replace("blockferry-{role}", user) for k, v in env.items()}

    def apply_acls(self, prefix: str, *options: str) -> None:
        """The mesh's ACLs (``blockferry acls --apply``) for topics under ``prefix``,
        added as the cluster's admin; ``options``: those of ``blockferry acls`` (the
        repositories, and on two sites ``--site …`` and ``--on SITE``)."""
        subprocess.run(
            [sys.executable, "-m", "blockferry.cli", "acls", "--apply", *options],
            env={
                **os.environ,
                **self.client_env("admin"),
                "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "BLOCKFERRY_KAFKA__TOPIC_PREFIX": prefix,
            },
            check=True,
            capture_output=True,
            timeout=60,
        )

    def admin_command(self, line: str) -> None:
        """Run a ``kafka-configs.sh`` command line the product prints (the broker in
        ``$KAFKA``, the admin's client settings in ``$ADMIN_CONFIG``) as the cluster's
        admin, with Kafka's tool from the fetched jars."""
        subprocess.run(
            ["bash", "-c", f'kafka-configs.sh() {{ bash "{KAFKA_SH}" configs "$@"; }}\n{line}'],
            env={
                **os.environ,
                "KAFKA": self.bootstrap,
                "ADMIN_CONFIG": str(self.data_dir / "security" / "admin.properties"),
            },
            check=True,
            capture_output=True,
            timeout=120,
        )

    def down(self) -> None:
        if (self.data_dir / "cluster.env").exists():
            self.resume()
            kafka_sh("down", "--data-dir", str(self.data_dir), timeout=120)

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
        signal_and_wait(pid, sig, timeout)

    def pause(self) -> None:
        """SIGSTOP every node: the cluster is unreachable, connections stay open."""
        for node in range(1, self.nodes + 1):
            pid = self.pid(node)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for node in range(1, self.nodes + 1):
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


@contextmanager
def running_kafka(data_dir: Path, nodes: int, timeout_s: int = 150) -> Iterator[str]:
    """A cluster for the block's time; yields its bootstrap servers."""
    cluster = KafkaCluster(data_dir, nodes)
    try:
        yield cluster.up(timeout_s)
    finally:
        cluster.down()
