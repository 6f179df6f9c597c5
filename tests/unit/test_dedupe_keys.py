"""A source mover's dedupe keys come from files, checked against the fingerprint the
repository's owner announces (the mesh's side: tests/e2e/test_bad_input.py)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from blockferry.core.blocks import key_fingerprint
from blockferry.core.errors import ConfigError
from blockferry.source_mover.dedupe_keys import DedupeKeys, key_file, write_key_file
from blockferry.transport.records import RepositoryInfo

KEY = secrets.token_bytes(32)


def announced(fingerprint: str = key_fingerprint(KEY)) -> RepositoryInfo:
    return RepositoryInfo(
        name="repo",
        repository_id="id",
        block_size=1 << 20,
        shard_count=2,
        owner="o",
        dedupe_key_fingerprint=fingerprint,
    )


def test_the_key_written_for_a_repository_is_read_back_and_private(tmp_path: Path) -> None:
    write_key_file(key_file(tmp_path / "keys", "repo"), KEY)
    path = tmp_path / "keys" / "repo.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert KEY.hex() not in key_fingerprint(KEY)
    assert DedupeKeys(tmp_path / "keys").key_for(announced()) == KEY


def test_a_missing_key_says_how_to_export_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"no dedupe key for repository repo: .*export-dedupe-key"
    ):
        DedupeKeys(tmp_path).key_for(announced())


def test_another_repository_s_key_is_refused_naming_both_fingerprints(tmp_path: Path) -> None:
    other = secrets.token_bytes(32)
    write_key_file(tmp_path / "repo.key", other)
    with pytest.raises(ConfigError) as raised:
        DedupeKeys(tmp_path).key_for(announced())
    assert f"the dedupe key in {tmp_path / 'repo.key'} is not repository repo's" in str(
        raised.value
    )
    assert key_fingerprint(other) in str(raised.value)
    assert key_fingerprint(KEY) in str(raised.value)


@pytest.mark.parametrize("text", ["not hex", "abcd", "ab" * 33])
def test_a_malformed_key_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "repo.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="does not hold a 32-byte key in hex"):
        DedupeKeys(tmp_path).key_for(announced())


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    write_key_file(tmp_path / "repo.key", KEY)
    (tmp_path / "repo.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600"):
        DedupeKeys(tmp_path).key_for(announced())


def test_an_owner_announcing_no_fingerprint_must_be_upgraded(tmp_path: Path) -> None:
    write_key_file(tmp_path / "repo.key", KEY)
    with pytest.raises(ConfigError, match=r"older target mover .* upgrade it"):
        DedupeKeys(tmp_path).key_for(announced(fingerprint=""))
