"""The one-site example installed on a real single-node Kubernetes (compose/local/k8s.sh)
as an operator would: every pod Ready, the repository made in the target mover's pod as
NOTES.txt says, a backup and a restore through the pods with the restored disk compared
from outside the cluster, then `helm upgrade` to a changed value and the mesh still
working.

What the example needs from outside the chart stands in on this machine: Kafka runs
beside the cluster (the pods reach it on their bridge), the volumes are host paths, and
the Secrets the example names are made here. The example's SASL/TLS, S3 gateway, ACL Job
and the Prometheus Operator's ServiceMonitor and PrometheusRule are left out of the
install (overridden below): their rendering is checked by test_chart.py. The dashboards'
ConfigMaps are installed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chart import CHART
from tests.chart.cluster import KUBECTL, Cluster, host_path_volume, kafka_for_pods, running_cluster

RELEASE = "blockferry"
DISK_MIB = 48
SMALL = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}


def _overrides(bootstrap: str) -> dict[str, Any]:
    """What the install changes of examples/one-site.yaml, and why: see the module."""
    roles = ("orchestrator", "guestProxy", "sourceMover", "dedupeIndex", "targetMover")
    values: dict[str, Any] = {role: {"resources": SMALL} for role in roles}
    values["image"] = {"repository": "localhost/blockferry", "pullPolicy": "Never"}
    values["kafka"] = {
        "bootstrapServers": bootstrap,
        "security": {"protocol": "PLAINTEXT", "passwordsSecret": "", "caSecret": ""},
    }
    values["repositories"] = {"gateway": None}
    values["repositoryKeysSecret"] = ""  # the key is made in the pod, on its volume
    values["gateway"] = {"enabled": False}
    values["acls"] = {"enabled": False}
    values["serviceMonitor"] = {"enabled": False}
    values["prometheusRule"] = {"enabled": False}
    example = yaml.safe_load((CHART / "examples" / "one-site.yaml").read_text())
    values["orchestrator"]["jobs"] = [
        job for job in example["orchestrator"]["jobs"] if "copy_from" not in job
    ]
    return values


def _claim(name: str, size: str, read_only: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadOnlyMany" if read_only else "ReadWriteOnce"],
            "storageClassName": "",
            "resources": {"requests": {"storage": size}},
        },
    }


def _secret(name: str, data: dict[str, str], kind: str = "Opaque") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": kind,
        "stringData": data,
    }


def _api_secrets(workdir: Path) -> dict[str, Path]:
    """The API's admin token and a self-signed certificate for 127.0.0.1 (what
    `kubectl port-forward` reaches it at) and the Service's name."""
    files = {name: workdir / f"api.{name}" for name in ("token", "crt", "key")}
    files["token"].write_text(secrets.token_hex(24))
    files["token"].chmod(0o600)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(files["key"]), "-out", str(files["crt"]), "-subj", "/CN=blockferry-api",
         "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{RELEASE}-orchestrator"],
        check=True, capture_output=True,
    )  # fmt: skip
    return files


def _ssh_secret(workdir: Path) -> dict[str, Any]:
    """The guest proxy's SSH client key and (here empty) known_hosts."""
    key = workdir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True, capture_output=True,
    )  # fmt: skip
    return _secret("blockferry-guest-ssh", {"id_ed25519": key.read_text(), "known_hosts": ""})


def _write_disk(path: Path, seed: int) -> None:
    """A disk of DISK_MIB MiB: random blocks with runs of zeros between them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = __import__("random").Random(seed)
    with path.open("wb") as f:
        for mib in range(DISK_MIB):
            f.write(rng.randbytes(1 << 20) if mib % 3 else bytes(1 << 20))
    os.chown(path, 10001, 10001)


@contextlib.contextmanager
def _api(cluster: Cluster, files: dict[str, Path]) -> Iterator[dict[str, str]]:
    """The CLI's environment for the orchestrator's API, reached through `kubectl
    port-forward` of its Service as NOTES.txt says."""
    forward = subprocess.Popen(
        [str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), "-n", cluster.namespace,
         "port-forward", "--address", "127.0.0.1", f"svc/{RELEASE}-orchestrator", ":8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, f"kubectl port-forward said {line!r}: {forward.stderr.read()[-2000:]}"  # type: ignore[union-attr]
        yield {
            **os.environ,
            "BLOCKFERRY_API_URL": f"https://127.0.0.1:{match.group(1)}",
            "BLOCKFERRY_API_TOKEN_FILE": str(files["token"]),
            "BLOCKFERRY_API_CA_FILE": str(files["crt"]),
        }
    finally:
        forward.terminate()
        forward.wait(timeout=30)


def _cli(env: dict[str, str], *args: str, timeout: float = 600) -> Any:
    """The JSON the CLI printed."""
    done = subprocess.run(
        [sys.executable, "-m", "blockferry.cli", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"blockferry {' '.join(args)}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout)


@dataclass(frozen=True)
class Release:
    cluster: Cluster
    volumes: Path
    """The directory of this machine behind the pods' volumes, one per claim."""
    api_files: dict[str, Path]
    values: tuple[str, ...]
    """helm's options that give it the values it was installed with."""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The example installed, the repository made, every pod Ready."""
    workdir = tmp_path_factory.mktemp("cluster")
    with running_cluster(workdir) as cluster, kafka_for_pods(workdir) as bootstrap:
        volumes = workdir / "volumes"
        claims = [  # claim, size, storage class (the example's, for the target mover)
            ("vm-disks", "100Gi", ""),
            ("vm-restores", "100Gi", ""),
            (f"data-{RELEASE}-orchestrator-0", "1Gi", ""),
            (f"data-{RELEASE}-dedupe-index-0", "10Gi", ""),
            (f"data-{RELEASE}-target-mover-0", "2Ti", "local-backup"),
        ]
        cluster.apply(
            *(host_path_volume(cluster, name, volumes / name, size, storage_class)
              for name, size, storage_class in claims)
        )  # fmt: skip
        files = _api_secrets(workdir)
        cluster.apply(
            _claim("vm-disks", "100Gi", read_only=True),
            _claim("vm-restores", "100Gi"),
            _ssh_secret(workdir),
            _secret("blockferry-api-token", {"token": files["token"].read_text()}),
            _secret(
                "blockferry-api-tls",
                {"tls.crt": files["crt"].read_text(), "tls.key": files["key"].read_text()},
                "kubernetes.io/tls",
            ),
        )
        _write_disk(volumes / "vm-disks" / "web-1" / "root.img", seed=1)
        values = workdir / "cluster-values.yaml"
        values.write_text(yaml.safe_dump(_overrides(bootstrap)))
        options = ("-f", str(CHART / "examples" / "one-site.yaml"), "-f", str(values))
        try:
            cluster.helm("install", RELEASE, *options)
            # as NOTES.txt says: the repository made in the target mover's pod, which
            # waits for it, running but not ready
            target = f"{RELEASE}-target-mover-0"
            cluster.wait_started(target)
            repository = "/var/lib/blockferry/repositories/default"
            key = ("--key-file", "/var/lib/blockferry/repository-keys/default.key")
            cluster.exec(target, "blockferry", "repo", "init", repository, *key)
            dedupe_key_file = "/tmp/default.key"
            cluster.exec(
                target, "blockferry", "repo", "export-dedupe-key", *key, repository, dedupe_key_file
            )
            dedupe_key = cluster.exec(target, "cat", dedupe_key_file)
            cluster.apply(_secret("blockferry-dedupe-keys", {"default.key": dedupe_key}))
            cluster.wait_ready(f"app.kubernetes.io/instance={RELEASE}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{cluster.diagnosis()}") from exc
        yield Release(cluster, volumes, files, options)


def _backup_and_restore(release: Release, name: str) -> None:
    """Run the example's job `fleet` through the pods, restore its restore point into
    the restores volume and compare it, from outside, with the disk backed up."""
    with _api(release.cluster, release.api_files) as env:
        session = _cli(env, "jobs", "start", "fleet", "--wait")
        assert session["state"] == "success", session
        points = _cli(env, "restore-points", "--job", "fleet")["restore_points"]
        assert session["restore_point"] in [point["id"] for point in points]
        _cli(env, "restore", session["restore_point"], "--to", f"/restores/{name}")
    disk = release.volumes / "vm-disks" / "web-1" / "root.img"
    restored = release.volumes / "vm-restores" / name
    assert restored.read_bytes() == disk.read_bytes(), f"{restored} differs from {disk}"


def test_a_backup_and_a_restore_through_the_pods_give_the_disk_back(installed: Release) -> None:
    try:
        _backup_and_restore(installed, "full.img")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{installed.cluster.diagnosis()}") from exc


def test_after_an_upgrade_to_a_changed_value_the_mesh_still_works(installed: Release) -> None:
    """`helm upgrade` with the source movers' workers changed: the pods whose settings
    changed are replaced, and an incremental backup and its restore still succeed."""
    cluster = installed.cluster
    _write_disk(installed.volumes / "vm-disks" / "web-1" / "root.img", seed=2)
    try:
        before = cluster.kubectl("get", "configmap", f"{RELEASE}-settings", "-o", "json")
        cluster.helm(
            "upgrade", RELEASE, *installed.values, "--set", "settings.source_mover.workers=2",
            "--wait", "--timeout", "5m",
        )  # fmt: skip
        after = cluster.kubectl("get", "configmap", f"{RELEASE}-settings", "-o", "json")
        assert before != after
        settings = yaml.safe_load(json.loads(after)["data"]["settings.yaml"])
        assert settings["source_mover"]["workers"] == 2
        cluster.wait_ready(f"app.kubernetes.io/instance={RELEASE}")
        _backup_and_restore(installed, "after-upgrade.img")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.diagnosis()}") from exc
