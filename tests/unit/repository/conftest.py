"""Fixtures for repository tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.repository import PackEntry, Repository, pack_index
from tests.unit.repository.repo_helpers import BLOCK_SIZE


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """An empty repository with the smallest block size, so tests stay fast."""
    repository = Repository.init(tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=2)
    yield repository
    repository.close()


@pytest.fixture
def decoded_index_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The packs whose index files are decoded from now on, in order."""
    packs: list[str] = []
    original = pack_index.decode_index_file

    def counting(data: bytes, pack_id: str, source: str) -> list[PackEntry]:
        packs.append(pack_id)
        return original(data, pack_id, source)

    monkeypatch.setattr(pack_index, "decode_index_file", counting)
    return packs
