"""``repo init --copy-params-from``: a copy destination with the source's block size and
dedupe key (so a block keeps its digest), and keys of its own for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from blockferry.cli import main
from blockferry.core.errors import ConfigError
from blockferry.repository import Repository
from blockferry.repository.config import RepositoryConfig
from blockferry.repository.keys import Secret


def _init(*args: str) -> Result:
    return CliRunner().invoke(main, ["repo", "init", *args], catch_exceptions=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    location = tmp_path / "source"
    created = _init(
        str(location), "--key-file", str(tmp_path / "source.key"), "--block-size", "512"
    )
    assert created.exit_code == 0, created.output
    return location


def _open(location: Path, key: Path) -> Repository:
    return Repository.open(location, secret=Secret.key_file(key))


def test_the_destination_takes_the_block_size_and_dedupe_key_and_has_its_own_keys(
    source: Path, tmp_path: Path
) -> None:
    made = _init(
        str(tmp_path / "copy"),
        "--key-file",
        str(tmp_path / "copy.key"),
        "--copy-params-from",
        str(source),
        "--from-key-file",
        str(tmp_path / "source.key"),
    )
    assert made.exit_code == 0, made.output
    original = _open(source, tmp_path / "source.key").config
    copy = _open(tmp_path / "copy", tmp_path / "copy.key").config
    assert copy.block_size == original.block_size == 512 * 1024
    assert copy.dedupe_key == original.dedupe_key
    assert copy.id != original.id
    with pytest.raises(Exception, match="key"):
        _open(tmp_path / "copy", tmp_path / "source.key")  # its master key is its own


def test_a_block_size_other_than_the_sources_is_refused(source: Path, tmp_path: Path) -> None:
    made = _init(
        str(tmp_path / "copy"),
        "--key-file",
        str(tmp_path / "copy.key"),
        "--block-size",
        "256",
        "--copy-params-from",
        str(source),
        "--from-key-file",
        str(tmp_path / "source.key"),
    )
    assert made.exit_code != 0
    assert "512 KiB" in made.output
    assert not (tmp_path / "copy").exists()


def test_the_source_must_be_unlocked(source: Path, tmp_path: Path) -> None:
    made = _init(
        str(tmp_path / "copy"),
        "--insecure-no-encryption",
        "--copy-params-from",
        str(source),
    )
    assert made.exit_code != 0
    assert "encrypted" in made.output
    alone = _init(
        str(tmp_path / "alone"),
        "--insecure-no-encryption",
        "--from-key-file",
        str(tmp_path / "source.key"),
    )
    assert alone.exit_code != 0
    assert "--copy-params-from" in alone.output


def test_a_dedupe_key_of_another_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        RepositoryConfig.new(block_size=256 * 1024, shard_count=1, dedupe_key=b"short")
