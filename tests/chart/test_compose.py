"""compose/compose.yaml and compose/two-sites.yaml: valid by the Compose specification
(loaded by compose-go, as Docker Compose loads them), and compose.yaml run for real with
podman-compose: Kafka, every role and Prometheus up, the repository made in the target
mover's container as the file's comments say, a backup and a restore through the
containers with the restored disk compared from outside, Prometheus scraping every role.

Public images are replaced by local ones (compose/local/image.sh standins) through the
variables the file takes; Grafana, which cannot be installed here, is left out of the run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from observability.alerts import ALERTS
from tests.chart.chart import ROOT
from tests.chart.cluster import IMAGE
from tests.system import TOOLS_DIR, free_port

COMPOSE = ROOT / "compose"
COMPOSE_CHECK = TOOLS_DIR / "compose-check"
ROLES = ("orchestrator", "guest-proxy", "source-mover", "dedupe-index", "target-mover")
RUN = ("kafka", *ROLES, "prometheus")
"""Every service but Grafana."""
DISK_MIB = 24


def _check(*files: str) -> list[str]:
    done = subprocess.run(
        [str(COMPOSE_CHECK), *files], cwd=COMPOSE, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_compose_files_are_valid_by_the_compose_specification() -> None:
    assert _check("compose.yaml") == sorted([*RUN, "grafana"])
    assert _check("compose.yaml", "two-sites.yaml") == sorted(
        [*RUN, "grafana", "kafka-offsite", "mirror-maker"]
    )


def test_a_file_that_breaks_the_specification_is_refused(tmp_path: Path) -> None:
    """The check can fail: a key the specification does not have."""
    broken = tmp_path / "compose.yaml"
    broken.write_text((COMPOSE / "compose.yaml").read_text().replace("read_only:", "readonly:"))
    done = subprocess.run(
        [str(COMPOSE_CHECK), str(broken)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "readonly" in done.stderr


class Compose:
    """podman-compose on compose.yaml as project ``name``, with ``env``."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env

    def __call__(self, *args: str, timeout: float = 600, stdin: str | None = None) -> str:
        command = [sys.executable, "-m", "podman_compose", "-p", self.name, "-f", "compose.yaml"]
        done = subprocess.run(
            [*command, *args], cwd=COMPOSE, env=self.env, input=stdin,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout

    def exec(self, service: str, *command: str, timeout: float = 600) -> str:
        return self("exec", "-T", service, *command, timeout=timeout)

    def logs(self) -> str:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            return "\n".join(
                f"== {service}\n{self('logs', '--tail', '20', service, timeout=60)}"
                for service in RUN
            )
        return ""


def _write_disk(path: Path) -> None:
    rng = __import__("random").Random(5)
    with path.open("wb") as f:
        for mib in range(DISK_MIB):
            f.write(rng.randbytes(1 << 20) if mib % 4 else bytes(1 << 20))


READY = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/readyz', timeout=3)"
"""What each role's healthcheck in compose.yaml runs."""


def _succeeds(run: Compose, service: str, *command: str) -> bool:
    try:
        run.exec(service, *command, timeout=60)
    except AssertionError:
        return False
    return True


def _until(what: str, check: Any, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(2)


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[tuple[Compose, Path]]:
    """compose.yaml up (but Grafana), with the stand-in images, its disks and restores
    in ``tmp_path``."""
    for name in ("disks", "restores"):
        (tmp_path / name).mkdir()
        os.chown(tmp_path / name, 10001, 10001)
    ports = {"api": free_port(), "prometheus": free_port()}
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(ROOT / "compose" / "local" / "containers.conf"),
        "BLOCKFERRY_IMAGE": IMAGE,
        "KAFKA_IMAGE": "localhost/standin-kafka:latest",
        "PROMETHEUS_IMAGE": "localhost/standin-prometheus:latest",
        "BLOCKFERRY_DISKS": str(tmp_path / "disks"),
        "BLOCKFERRY_RESTORES": str(tmp_path / "restores"),
        "BLOCKFERRY_API_PORT": str(ports["api"]),
        "PROMETHEUS_PORT": str(ports["prometheus"]),
    }
    run = Compose(f"bftest{os.getpid()}", env)
    try:
        run("up", "-d", *RUN)
        yield run, tmp_path
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            run("down", "-v", "-t", "10", timeout=300)


def test_a_backup_and_a_restore_through_the_containers(
    compose: tuple[Compose, Path],
) -> None:
    run, workdir = compose
    _write_disk(workdir / "disks" / "vm.img")
    repository = "/var/lib/blockferry/repositories/default"
    key = ("--key-file", "/var/lib/blockferry/repository-keys/default.key")
    try:
        _until("the target mover runs", lambda: _succeeds(run, "target-mover", "true"))
        run.exec("target-mover", "blockferry", "repo", "init", repository, *key)
        run.exec(
            "target-mover", "blockferry", "repo", "export-dedupe-key", *key, repository,
            "/var/lib/blockferry/keys/default.key",
        )  # fmt: skip
        for role in ROLES:
            _until(f"{role} is ready", lambda: _succeeds(run, role, "python3", "-c", READY))  # noqa: B023
        session = json.loads(
            run.exec("orchestrator", "blockferry", "backup", "/disks/vm.img", "--wait", "--json")
        )
        assert session["state"] == "success", session
        run.exec("orchestrator", "blockferry", "restore", session["restore_point"],
                 "--to", "/restores/vm.img", "--json")  # fmt: skip
        restored = (workdir / "restores" / "vm.img").read_bytes()
        assert restored == (workdir / "disks" / "vm.img").read_bytes()

        prometheus = f"http://127.0.0.1:{run.env['PROMETHEUS_PORT']}/api/v1/query"

        def every_role_scraped() -> bool:
            result = httpx.get(prometheus, params={"query": "up"}, timeout=5).json()
            up = {
                (s["metric"]["instance"], s["metric"]["role"]): s["value"][1]
                for s in result["data"]["result"]
            }
            return up == {(f"{role}:8080", role): "1" for role in ROLES}

        _until("Prometheus scrapes every role", every_role_scraped, timeout_s=120)
        rules_url = f"http://127.0.0.1:{run.env['PROMETHEUS_PORT']}/api/v1/rules"
        groups = httpx.get(rules_url, timeout=5).json()["data"]["groups"]
        loaded = {rule["name"]: rule["health"] for g in groups for rule in g["rules"]}
        assert set(loaded) == {alert.name for alert in ALERTS}, "the alert rules are loaded"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{run.logs()}") from exc
