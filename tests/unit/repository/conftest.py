"""Fixtures for repository tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.repository import PackEntry, Repository, pack_index
from blockferry.repository.keys import Secret, write_key_file
from blockferry.repository.storage import Storage
from tests.minio import MinioServer
from tests.samba import SambaServer
from tests.unit.repository.repo_helpers import BLOCK_SIZE, as_version_1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``local_only`` damage or inspect a repository's files directly (a
    flipped byte, a truncated pack), or stress what no backend changes (a map rebuilt
    under lookups): they run on the local kinds of ``repo`` only, not on S3 or SMB."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        remote = params is not None and params.params.get("repo") in ("s3", "smb")
        (dropped if remote and item.get_closest_marker("local_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=["encrypted", "plain", "v1-upgraded", "s3", "smb"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    """An empty repository with the smallest block size, so tests stay fast: each test
    runs on an encrypted one, on one without encryption, on a version 1 repository
    upgraded in place, and on an encrypted one in an S3 bucket (MinIO) and on an SMB
    share (Samba)."""
    secret = None
    if request.param in ("encrypted", "s3", "smb"):
        key_file = tmp_path / "repo.key"
        write_key_file(key_file)
        secret = Secret.key_file(key_file)
    place: Path | Storage = tmp_path / "repo"
    if request.param == "s3":
        minio: MinioServer = request.getfixturevalue("minio")
        place = minio.storage(minio.new_bucket())
    elif request.param == "smb":
        samba: SambaServer = request.getfixturevalue("samba")
        place = samba.storage(f"{tmp_path.name}/")
    repository = Repository.init(place, block_size=BLOCK_SIZE, shard_count=2, secret=secret)
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
