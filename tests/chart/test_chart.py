"""The chart: lint, every example rendered and validated strictly against the
Kubernetes API of several versions, and what the rendered objects must hold: each
role's settings accepted by ``blockferry config --check``, probes on the port the
settings serve, every volume mounted defined, nothing run as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.chart import CHART, EXAMPLES, HELM_DOCS, KUBERNETES_VERSIONS, helm, render

WORKLOADS = ("Deployment", "StatefulSet", "Job")
OWN_KINDS = ("ServiceMonitor", "PrometheusRule")
"""Of the Prometheus Operator's CRDs: no bundled schema; checked by assertions."""

ROLES = ("orchestrator", "guest-proxy", "source-mover", "dedupe-index", "target-mover", "gateway")


def _examples() -> list[Path | None]:
    return [None, *EXAMPLES]


def _id(values: Path | None) -> str:
    return "defaults" if values is None else values.stem


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def _settings(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-settings")
    ]
    loaded: dict[str, Any] = yaml.safe_load(config["data"]["settings.yaml"])
    return loaded


def test_the_chart_lints_strictly() -> None:
    helm("lint", "--strict", str(CHART))
    for values in EXAMPLES:
        helm("lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("values", _examples(), ids=_id)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_kubernetes(values: Path | None, version: str) -> None:
    objects = render(values, version)
    assert objects
    for found in objects:
        if found["kind"] in OWN_KINDS:
            continue
        try:
            kubernetes_validate.validate(found, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{found['kind']} {found['metadata']['name']}: {exc}") from exc


@pytest.mark.parametrize("values", _examples(), ids=_id)
def test_each_roles_settings_are_accepted_by_the_role(values: Path | None, tmp_path: Path) -> None:
    """What a pod's role reads, its settings file and its environment, is what
    ``blockferry config --check`` accepts: no misspelt key, no value that fails."""
    objects = render(values)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(_settings(objects)))
    for workload in _workloads(objects):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        role = args[1] if args[0] == "run" else None
        env = {
            e["name"]: e.get("value", "from-the-pod")
            for e in container.get("env", [])
            if e["name"] != "BLOCKFERRY_CONFIG_FILE"
        }
        check = ["config", "--check", *([role] if role else [])]
        done = subprocess.run(
            [sys.executable, "-m", "blockferry.cli", *check],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("BLOCKFERRY_")},
                **env,
                "BLOCKFERRY_CONFIG_FILE": str(settings),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{workload['metadata']['name']}: {done.stderr}"


@pytest.mark.parametrize("values", _examples(), ids=_id)
def test_probes_volumes_and_no_root(values: Path | None) -> None:
    objects = render(values)
    settings = _settings(objects)
    port = settings["http"]["port"]
    for workload in _workloads(objects):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        privileged = security.get("privileged", False)
        assert privileged == _opted_into_block_devices(values, container), name
        if not privileged:
            assert security["allowPrivilegeEscalation"] is False, name

        defined = {v["name"] for v in pod.get("volumes", [])}
        defined |= {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        mounts = container.get("volumeMounts", [])
        assert {m["name"] for m in mounts} <= defined, name
        assert any(m["mountPath"] == "/tmp" for m in mounts), f"{name}: a writable /tmp"
        if workload["kind"] == "Job":
            continue
        role = container["args"][1]
        assert {m["mountPath"] for m in mounts} >= {"/var/lib/blockferry"}, name
        named = [e.get("value", "") for e in container.get("env", [])]
        files = [
            *_files_of(settings, role),
            *(v for v in named if v.startswith("/etc/blockferry/")),
        ]
        for path in files:
            assert any(
                path == m["mountPath"] or path.startswith(m["mountPath"] + "/") for m in mounts
            ), f"{name}: {path} is not mounted"

        (http,) = container["ports"]
        assert (http["name"], http["containerPort"]) == ("http", port), name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "http", f"{name} {probe}"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def _opted_into_block_devices(values: Path | None, container: dict[str, Any]) -> bool:
    if values is None or container["name"] != "source-mover":
        return False
    chosen = yaml.safe_load(values.read_text()).get("sourceMover", {})
    return bool(chosen.get("blockDevices", {}).get("enabled"))


def _files_of(settings: dict[str, Any], role: str) -> list[str]:
    """The files under /etc/blockferry ``role``'s settings name (secrets, mounted)."""
    section = role.replace("-", "_")
    mine = {k: v for k, v in settings.items() if k not in {r.replace("-", "_") for r in ROLES}}
    mine[section] = settings.get(section, {})
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.startswith("/etc/blockferry/"):
            found.append(node.replace("{role}", role))

    walk(mine)
    return found


@pytest.mark.parametrize("values", _examples(), ids=_id)
def test_the_workload_of_each_role(values: Path | None) -> None:
    """Deployments for the stateless roles, StatefulSets with a volume for those that
    keep state, one orchestrator, and a Service for each role's port."""
    objects = render(values)
    chosen = {} if values is None else yaml.safe_load(values.read_text())
    kinds = {
        w["spec"]["template"]["spec"]["containers"][0]["args"][1]: w
        for w in _workloads(objects)
        if w["kind"] != "Job"
    }
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for role in ROLES:
        key = role.split("-")[0] + "".join(p.title() for p in role.split("-")[1:])
        enabled = chosen.get(key, {}).get("enabled", defaults[key]["enabled"])
        assert (role in kinds) == enabled, role
        if not enabled:
            continue
        workload = kinds[role]
        stateful = role in ("orchestrator", "dedupe-index", "target-mover", "gateway")
        assert workload["kind"] == ("StatefulSet" if stateful else "Deployment"), role
        if stateful:
            (claim,) = workload["spec"]["volumeClaimTemplates"]
            assert claim["metadata"]["name"] == "data"
        services = [
            o
            for o in objects
            if o["kind"] == "Service" and o["metadata"]["name"] == workload["metadata"]["name"]
        ]
        assert len(services) == 1, role
        if role == "orchestrator":
            assert workload["spec"]["replicas"] == 1
            assert "podManagementPolicy" not in workload["spec"], "one pod at a time"


def test_values_that_make_no_sense_are_refused() -> None:
    refused = {
        "orchestrator.replicas=2": "maximum",
        "sourceMover.workerz=4": "additional properties",
        "kafka.security.protocol=SASL_SSL": "passwordsSecret",
        "gateway.enabled=true": "repositories.gateway",
    }
    for setting, why in refused.items():
        with pytest.raises(AssertionError, match=why):
            helm("template", "bf", str(CHART), "--set", setting)


def _strimzi(tmp_path: Path, *acls_options: str) -> list[str]:
    """helm's options for the one-site example on Strimzi, with the ACLs `blockferry
    acls --format json ACLS_OPTIONS` prints."""
    acls = tmp_path / "acls.json"
    done = subprocess.run(
        [sys.executable, "-m", "blockferry.cli", "acls", "--format", "json", *acls_options],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    acls.write_text(done.stdout)
    example = str(CHART / "examples" / "one-site.yaml")
    return ["-f", example, "--set", "strimzi.enabled=true,acls.enabled=false",
            "--set-file", f"strimzi.acls={acls}"]  # fmt: skip


def test_on_strimzi_each_role_is_a_kafka_user_with_the_acls_of_blockferry_acls(
    tmp_path: Path,
) -> None:
    options = _strimzi(tmp_path, "--repository", "default", "--gateway-repository", "offsite")
    acls = json.loads((tmp_path / "acls.json").read_text())
    objects = [
        doc for doc in yaml.safe_load_all(helm("template", "bf", str(CHART), *options)) if doc
    ]
    users = {doc["metadata"]["name"]: doc for doc in objects if doc["kind"] == "KafkaUser"}
    assert set(users) == {f"blockferry-{role}" for role in ROLES}
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "kafka"
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["acls"] == acls[f"User:{name}"]
    assert not [doc for doc in objects if doc["kind"] == "Job"], "no ACL Job beside them"
    for workload in _workloads(objects):
        role = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-password"]["secret"]["secretName"] == f"blockferry-{role}"
        assert volumes["kafka-password"]["secret"]["items"] == [{"key": "password", "path": role}]


def test_strimzi_without_the_acls_of_a_role_is_refused(tmp_path: Path) -> None:
    options = _strimzi(tmp_path, "--repository", "default", "--gateway-repository", "offsite")
    with pytest.raises(AssertionError, match=r"acls\.enabled"):
        helm("template", "bf", str(CHART), *options, "--set", "acls.enabled=true")
    without_gateway = _strimzi(tmp_path, "--repository", "default")
    acls = json.loads((tmp_path / "acls.json").read_text())
    assert "User:blockferry-gateway" not in acls
    with pytest.raises(AssertionError, match="no ACLs of User:blockferry-gateway"):
        helm("template", "bf", str(CHART), *without_gateway)
    example = str(CHART / "examples" / "one-site.yaml")
    with pytest.raises(AssertionError, match="blockferry acls --format json"):
        helm("template", "bf", str(CHART), "-f", example, "--set",
             "strimzi.enabled=true,acls.enabled=false")  # fmt: skip


def test_the_alert_rules_and_dashboards_are_the_generated_files() -> None:
    objects = render(CHART / "examples" / "one-site.yaml")
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    shipped = {
        path.name: path.read_text() for path in (CHART / "files" / "dashboards").glob("*.json")
    }
    dashboards = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(shipped) >= 5
    assert {name: text for o in dashboards for name, text in o["data"].items()} == {
        name: text.rstrip("\n") for name, text in shipped.items()
    }
    assert {o["metadata"]["annotations"]["grafana_folder"] for o in dashboards} == {"blockferry"}


def test_the_readme_is_generated_from_the_values() -> None:
    """Its values table is helm-docs' from the comments of values.yaml: regenerate it
    with `helm-docs --chart-search-root charts/blockferry` (compose/local/chart-tools.sh
    builds it)."""
    generated = subprocess.run(
        [str(HELM_DOCS), "--chart-search-root", str(CHART), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert generated.strip() == (CHART / "README.md").read_text().strip()
    undocumented = [line for line in generated.splitlines() if line.endswith("|  |")]
    per_role = (
        "affinity",
        "enabled",
        "extra",
        "nodeSelector",
        "pod",
        "replicas",
        "resources",
        "tolerations",
        "topology",
    )
    assert all(line.split(".", 1)[1].startswith(per_role) for line in undocumented), undocumented


def test_the_schema_is_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
