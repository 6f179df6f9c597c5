"""Creating and opening repositories; config.json."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from blockferry.core.blocks import BLOCK_SIZES, DEFAULT_BLOCK_SIZE
from blockferry.core.errors import (
    ConfigError,
    CorruptionError,
    RepositoryError,
    RepositoryNotFound,
)
from blockferry.repository import Repository, layout
from blockferry.repository.config import RepositoryConfig
from tests.unit.repository.repo_helpers import backup, file_of, make_image, root


def test_init_then_open_round_trip(tmp_path: Path) -> None:
    created = Repository.init(tmp_path / "r", block_size=512 * 1024, shard_count=4)
    opened = Repository.open(tmp_path / "r")
    assert opened.config == created.config
    assert opened.config.block_size == 512 * 1024
    assert opened.config.shard_count == 4
    assert len(opened.config.dedupe_key) == 32
    assert "dedupe_key" not in repr(opened.config)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.json"]
    document = json.loads((tmp_path / "r" / "config.json").read_text())
    assert document["version"] == 2 and document["encryption"] == {"mode": "none"}


def test_init_defaults(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "r")
    assert repo.config.block_size == DEFAULT_BLOCK_SIZE
    assert repo.config.shard_count == 8


def test_init_into_empty_directory_and_fs_root_with_lost_and_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    Repository.init(tmp_path / "empty")
    (tmp_path / "volume" / "lost+found").mkdir(parents=True)
    Repository.init(tmp_path / "volume")


def test_init_refuses_existing_repository_and_non_empty_directory(tmp_path: Path) -> None:
    Repository.init(tmp_path / "r")
    with pytest.raises(RepositoryError, match="already exists"):
        Repository.init(tmp_path / "r")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(RepositoryError, match="not empty"):
        Repository.init(tmp_path / "other")
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(RepositoryError, match="Not a directory"):
        Repository.init(tmp_path / "plain-file")


def test_init_completes_after_a_crash_before_config(tmp_path: Path) -> None:
    for name in ("packs", "index"):
        (tmp_path / "r" / name).mkdir(parents=True)
    Repository.init(tmp_path / "r")
    assert Repository.open(tmp_path / "r")


@pytest.mark.parametrize(
    ("block_size", "shard_count"),
    [(4096, 8), (3 * 1024 * 1024, 8), (DEFAULT_BLOCK_SIZE, 0), (DEFAULT_BLOCK_SIZE, -1)],
)
def test_init_rejects_invalid_settings(tmp_path: Path, block_size: int, shard_count: int) -> None:
    with pytest.raises(ConfigError):
        Repository.init(tmp_path / "r", block_size=block_size, shard_count=shard_count)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_every_block_size_is_accepted(tmp_path: Path, block_size: int) -> None:
    assert Repository.init(tmp_path / "r", block_size=block_size).config.block_size == block_size


def test_open_missing_repository_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFound, match="blockferry repo init"):
        Repository.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryNotFound, match="blockferry repo init"):
        Repository.open(tmp_path / "empty")


def _config_document() -> dict[str, object]:
    config = RepositoryConfig.new(block_size=DEFAULT_BLOCK_SIZE, shard_count=2)
    document: dict[str, object] = json.loads(config.to_json())
    return document


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"version": 3}, RepositoryError, "version 3 is not supported"),
        ({"version": 1, "encryption": {"mode": "aes-256-gcm"}}, RepositoryError, "encryption mode"),
        ({"encryption": {"mode": "rot13"}}, RepositoryError, "encryption mode"),
        (
            {"encryption": {"mode": "aes-256-gcm", "key_derivation": "md5"}},
            RepositoryError,
            "key derivation",
        ),
        ({"encryption": {"mode": "aes-256-gcm"}}, CorruptionError, "malformed"),
        ({"digest": "sha256"}, RepositoryError, "digest algorithm"),
        ({"block_size": 1000}, CorruptionError, "invalid block size"),
        ({"shard_count": 0}, CorruptionError, "invalid shard count"),
        ({"dedupe_key": "abcd"}, CorruptionError, "dedupe key"),
        ({"dedupe_key": "zz"}, CorruptionError, "malformed"),
        ({"block_size": "1048576"}, CorruptionError, "malformed"),
        ({"id": None}, CorruptionError, "malformed"),
    ],
)
def test_config_rejects(change: dict[str, object], error: type[Exception], message: str) -> None:
    document = _config_document() | change
    with pytest.raises(error, match=message):
        RepositoryConfig.from_json(json.dumps(document).encode(), "config.json")


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"version": 1}'])
def test_config_rejects_malformed_json(data: bytes) -> None:
    with pytest.raises(CorruptionError, match=r"config\.json"):
        RepositoryConfig.from_json(data, "config.json")


def test_every_file_of_a_repository_is_its_owners_only(tmp_path: Path) -> None:
    """config.json holds the dedupe key; the rest is backed-up data."""
    repo = Repository.init(tmp_path / "repo", block_size=256 * 1024, shard_count=1)
    backup(repo, "vm", {"sda": make_image("aB")})
    files = [path for path in root(repo).rglob("*") if path.is_file()]
    assert file_of(repo, layout.CONFIG_FILE) in files and len(files) > 3
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}
