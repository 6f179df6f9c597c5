"""Fixtures for repository tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.repository import Repository
from tests.unit.repository.repo_helpers import BLOCK_SIZE


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """An empty repository with the smallest block size, so tests stay fast."""
    repository = Repository.init(tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=2)
    yield repository
    repository.close()
