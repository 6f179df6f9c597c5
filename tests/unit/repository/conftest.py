"""Fixtures for repository tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.repository import PackEntry, Repository, pack_index
from blockferry.repository.keys import Secret, write_key_file
from tests.unit.repository.repo_helpers import BLOCK_SIZE, as_version_1


@pytest.fixture(params=["encrypted", "plain", "v1-upgraded"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    """An empty repository with the smallest block size, so tests stay fast: each test
    runs on an encrypted one, on one without encryption, and on a version 1 repository
    upgraded in place."""
    secret = None
    if request.param == "encrypted":
        key_file = tmp_path / "repo.key"
        write_key_file(key_file)
        secret = Secret.key_file(key_file)
    repository = Repository.init(
        tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=2, secret=secret
    )
    if request.param == "v1-upgraded":
        repository = as_version_1(repository)
        assert repository.upgrade()
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
