"""Fixtures of the observability tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import MeshProcesses
from tests.registry import SchemaRegistry, schema_registry


@pytest.fixture
def mesh_processes(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[MeshProcesses]:
    mesh = MeshProcesses(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        yield mesh
    finally:
        mesh.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SchemaRegistry]:
    with schema_registry(tmp_path / "registry") as started:
        yield started
