"""The single-node Kubernetes of compose/local/k8s.sh with the image of `make image`
loaded, and a Kafka broker of this machine that its pods reach on the pods' bridge."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chart.chart import CHART, HELM, ROOT
from tests.kafka_cluster import KafkaCluster
from tests.system import TOOLS_DIR, free_port
from tests.tcp_relay import TcpRelay

K8S_SH = ROOT / "compose" / "local" / "k8s.sh"
KUBECTL = TOOLS_DIR / "k8s" / "kubectl"
HOST_ADDRESS = "10.244.77.1"
"""This machine's address on the pods' bridge (k8s.sh): where they reach Kafka."""
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)
IMAGE = f"localhost/blockferry:{VERSION}"


def _run(args: list[str], timeout: float, stdin: str | None = None) -> str:
    done = subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])}…: {done.stderr[-3000:]}{done.stdout[-2000:]}")
    return done.stdout


@dataclass(frozen=True)
class Cluster:
    dir: Path
    namespace: str = "backup"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """kubectl's output, in the release's namespace."""
        command = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "-n", self.namespace]
        return _run([*command, *args], timeout, stdin)

    def apply(self, *objects: dict[str, Any]) -> None:
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl("apply", "-f", "-", stdin=json.dumps(items))

    def helm(self, *args: str, timeout: float = 300) -> str:
        command = [str(HELM), "--kubeconfig", str(self.kubeconfig), "-n", self.namespace]
        return _run([*command, *args, str(CHART)], timeout)

    def exec(self, pod: str, *command: str, timeout: float = 300) -> str:
        """What ``command`` printed in ``pod``'s container."""
        return self.kubectl("exec", pod, "--", *command, timeout=timeout)

    def wait_ready(self, selector: str, timeout_s: int = 240) -> None:
        """Until every pod ``selector`` picks is Ready (its readiness probe passes)."""
        self.kubectl(
            "wait", "--for=condition=Ready", "pod", "-l", selector, f"--timeout={timeout_s}s",
            timeout=timeout_s + 30,
        )  # fmt: skip

    def wait_started(self, pod: str, timeout_s: int = 240) -> None:
        """Until ``pod``'s container runs (ready or not): what `kubectl exec` needs."""
        wait = f"--timeout={timeout_s}s"
        self.kubectl("wait", "--for=create", f"pod/{pod}", wait, timeout=timeout_s + 30)
        self.kubectl(
            "wait", "--for=jsonpath={.status.containerStatuses[0].started}=true", f"pod/{pod}",
            wait, timeout=timeout_s + 30,
        )  # fmt: skip

    def diagnosis(self) -> str:
        """The pods and the last log lines of each: what a failed step is shown with."""
        lines = [self.kubectl("get", "pods,pvc", "-o", "wide")]
        for pod in self.kubectl("get", "pods", "-o", "name").split():
            with contextlib.suppress(AssertionError):
                lines.append(f"== {pod}\n" + self.kubectl("logs", pod, "--tail=30"))
        return "\n".join(lines)


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[Cluster]:
    """The cluster, up with the image loaded, until the block ends."""
    directory = workdir / "k8s"
    try:
        _run(["bash", str(K8S_SH), "up", str(directory)], timeout=1800)
        _run(["bash", str(K8S_SH), "load", str(directory), IMAGE], timeout=600)
        cluster = Cluster(directory)
        cluster.kubectl("create", "namespace", cluster.namespace)
        yield cluster
    finally:
        subprocess.run(
            ["bash", str(K8S_SH), "down", str(directory)], capture_output=True, timeout=300
        )
        left = _containers_left()
        assert not left, f"k8s.sh down left the pods' processes {left} running"


def _containers_left() -> list[int]:
    """Processes in containers of a containerd namespace k8s.io (their cgroups)."""
    left = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and ":/k8s.io/" in (entry / "cgroup").read_text():
                left.append(int(entry.name))
    return left


@contextlib.contextmanager
def kafka_for_pods(workdir: Path) -> Iterator[str]:
    """A Kafka broker of this machine; yields the bootstrap servers the pods use (its
    WAN listener, through a relay on the bridge's host address)."""
    wan_port = free_port()
    relay = TcpRelay("127.0.0.1", wan_port, host=HOST_ADDRESS)
    kafka = KafkaCluster(workdir / "kafka", wan=(wan_port, relay.address))
    try:
        kafka.up()
        yield relay.address
    finally:
        kafka.down()
        relay.close()


def host_path_volume(
    cluster: Cluster, claim: str, path: Path, size: str, storage_class: str = ""
) -> dict[str, Any]:
    """A PersistentVolume on this machine's ``path`` (owned by the image's user) for the
    claim named ``claim`` (of ``storage_class``, for at most ``size``) alone."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 10001, 10001)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{cluster.namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "storageClassName": storage_class,
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": cluster.namespace, "name": claim},
        },
    }
