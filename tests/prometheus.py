"""A real Prometheus for tests (Debian's package): on 127.0.0.1, a free port, its own
config (every target scraped each second, rules evaluated each second) and its data in
a directory of its own. Started as a child process and stopped by its pid."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.system import free_port, need_commands, stop_process

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expr`` evaluates to now."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body.get('error', body)}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every rule loaded, with its health and last evaluation."""
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        active: list[dict[str, Any]] = body["data"]["activeTargets"]
        return active


@contextlib.contextmanager
def prometheus(
    workdir: Path, targets: dict[str, int], rule_files: list[Path]
) -> Iterator[PrometheusServer]:
    """Prometheus scraping ``targets`` (role -> its port on 127.0.0.1) as the job
    ``blockferry``, each labelled with its ``role``, and evaluating ``rule_files``."""
    need_commands("prometheus", "prometheus", "promtool")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": [
                    {
                        "job_name": "blockferry",
                        "static_configs": [
                            {"targets": [f"127.0.0.1:{port}"], "labels": {"role": role}}
                            for role, port in sorted(targets.items())
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server, process)
        yield server
    finally:
        stop_process(process)


def _wait_ready(server: PrometheusServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{server.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"prometheus not ready in {START_TIMEOUT_S} s")
