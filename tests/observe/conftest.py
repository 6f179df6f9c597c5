"""Fixtures of the observability tests: the end-to-end tests' mesh, and a schema registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import mesh_processes
from tests.registry import SchemaRegistry, schema_registry

__all__ = ["mesh_processes"]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SchemaRegistry]:
    with schema_registry(tmp_path / "registry") as started:
        yield started
