"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import MeshProcesses


@pytest.fixture
def mesh_processes(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[MeshProcesses]:
    mesh = MeshProcesses(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        yield mesh
    finally:
        mesh.close()
