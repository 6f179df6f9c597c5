"""The chart and its examples, rendered by Helm (built by compose/local/chart-tools.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.system import TOOLS_DIR

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "blockferry"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
HELM = TOOLS_DIR / "helm"
HELM_DOCS = TOOLS_DIR / "helm-docs"
KUBERNETES_VERSIONS = ("1.33.0", "1.35.0", "1.37.0")
"""Validated against: the oldest and newest Kubernetes the chart is kept for, and one
between."""


def helm(*args: str) -> str:
    """Helm's output; raises with what it said when it fails."""
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {done.stderr}")
    return done.stdout


def render(
    values: Path | None, kube_version: str = KUBERNETES_VERSIONS[-1]
) -> list[dict[str, Any]]:
    """The objects the chart makes with ``values`` (None: its defaults)."""
    args = ["template", "bf", str(CHART), "--namespace", "backup", "--kube-version", kube_version]
    if values is not None:
        args += ["-f", str(values)]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]
