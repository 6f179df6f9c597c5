"""The mesh watched as its users watch it: a real Prometheus scrapes every role through
a job's full backup (guest scripts and a snapshot around it), an incremental, a verify
and a restore; then every dashboard panel's query and every alert's series are evaluated
on it, and a stock Avro consumer reads the run's public events through a real schema
registry."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from observability.alerts import ALERTS, RULES_FILE
from observability.dashboards import panels
from tests.e2e.harness import MeshProcesses, make_disk
from tests.observe.events import read_events
from tests.prometheus import PrometheusServer, prometheus
from tests.registry import SchemaRegistry

pytestmark = pytest.mark.e2e

DATA_WAIT_S = 90.0
"""How long a query may take to return data: the orchestrator reads Kafka's offsets
every 15 s, a counter's increase needs two scrapes."""

VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${__range}": "1h",
    "$repository": ".*",
    "$job": ".*",
    "$role": ".*",
}
"""What Grafana would put in the panels' template variables: every repository and job."""


def substituted(expr: str) -> str:
    for variable, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


def values(samples: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in samples]


def data_of(server: PrometheusServer, expr: str, nonzero: bool) -> list[dict[str, Any]]:
    """The samples ``expr`` returns once it returns any (and a non-zero one where
    ``nonzero``), waiting for scrapes; the last answer when time is up."""
    deadline = time.monotonic() + DATA_WAIT_S
    while True:
        samples = server.query(expr)
        if samples and (not nonzero or any(v != 0 for v in values(samples))):
            return samples
        if time.monotonic() > deadline:
            return samples
        time.sleep(2)


def change(disk: Path) -> None:
    with disk.open("r+b") as f:
        for offset in (300_000, 5_000_000):
            f.seek(offset)
            f.write(os.urandom(70_000))


def job(disk: Path) -> dict[str, Any]:
    """A nightly job of one VM whose guest scripts and snapshot commands run on the
    guest proxy's host."""
    return {
        "name": "web",
        "vms": [
            {
                "name": "web1",
                "disks": [{"name": "sda", "source": str(disk)}],
                "guest": {"connection": "local"},
            }
        ],
        "schedule": {"cron": "30 1 * * *"},
        "guest_processing": {"pre_freeze": "true", "post_thaw": "true"},
        "snapshot": {
            "provider": "command",
            "create": 'cp "$BLOCKFERRY_SOURCE" "$BLOCKFERRY_SOURCE.$BLOCKFERRY_SESSION"'
            ' && echo "$BLOCKFERRY_SOURCE.$BLOCKFERRY_SESSION"',
            "delete": 'rm "$BLOCKFERRY_SNAPSHOT"',
        },
    }


def test_dashboards_and_alerts_evaluate_on_a_mesh_and_events_read_by_a_stock_consumer(
    mesh_processes: MeshProcesses, registry: SchemaRegistry, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_TARGET_MOVER__MEASURE_EVERY_S"] = "2"
    mesh.env["BLOCKFERRY_ORCHESTRATOR__EVENTS_SCHEMA_REGISTRY_URL"] = registry.url
    mesh.up(shards=2)
    mesh.start("guest-proxy", BLOCKFERRY_GUEST_PROXY__RUN_LOCAL_COMMANDS="true")
    with prometheus(tmp_path / "prometheus", mesh.ports, [RULES_FILE]) as server:
        every_role = f'count(up{{job="blockferry"}} == 1) == {len(mesh.ports)}'
        assert data_of(server, every_role, nonzero=True), server.targets()
        disk = make_disk(tmp_path / "web1-sda.img", 12, seed=21)
        assert mesh.api("POST", "/api/v1/jobs", json=job(disk)).status_code == 201
        full = mesh.cli_json("jobs", "start", "web", "--wait")
        change(disk)
        incremental = mesh.cli_json("jobs", "start", "web", "--wait")
        assert (full["state"], incremental["state"]) == ("success", "success"), incremental
        points = [full["restore_point"], incremental["restore_point"]]
        assert mesh.cli_json("verify", points[1])["ok"] is True
        mesh.assert_restores(points[1], disk)

        empty = []
        for panel in panels():
            expr = substituted(panel.expr)
            samples = data_of(server, expr, panel.nonzero)
            if not samples or (panel.nonzero and not any(values(samples))):
                empty.append(f"{panel.dashboard} / {panel.title}: {expr} -> {samples}")
        for alert in ALERTS:
            samples = data_of(server, alert.signal, nonzero=False)
            if not samples:
                empty.append(f"alert {alert.name}: {alert.signal} returned nothing")
        assert not empty, "\n".join(empty)

        rules = {rule["name"]: rule for rule in server.rules()}
        assert set(rules) == {alert.name for alert in ALERTS}
        unhealthy = {n: r.get("lastError") for n, r in rules.items() if r["health"] != "ok"}
        assert not unhealthy, unhealthy
        firing = {n for n, r in rules.items() if r["state"] != "inactive"}
        assert not firing, f"alerts pending or firing on a healthy run: {firing}"

    bootstrap = mesh.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"]
    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]
    sessions = read_events(bootstrap, f"{prefix}.session-results", registry.url, 3)
    sessions.sort(key=lambda event: event["finished"])
    assert [(s["kind"], s["job"], s["state"], s["restore_point"]) for s in sessions[:2]] == [
        ("backup", "web", "success", points[0]),
        ("backup", "web", "success", points[1]),
    ]
    assert (sessions[2]["kind"], sessions[2]["state"]) == ("restore", "success")
    committed = read_events(bootstrap, f"{prefix}.restore-points-committed", registry.url, 2)
    committed.sort(key=lambda event: event["created"])
    assert [(c["job"], c["restore_point"], c["parent"]) for c in committed] == [
        ("web", points[0], None),
        ("web", points[1], points[0]),
    ]
    assert committed[1]["disks"] == [{"name": "web1.sda", "size": disk.stat().st_size}]
