"""Repositories named by location: each kind parsed, and malformed ones refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core.errors import ConfigError
from blockferry.repository.locations import (
    LOCAL,
    S3,
    SMB,
    local_path,
    open_storage,
    s3_location,
    scheme,
    smb_location,
)
from blockferry.repository.s3_storage import S3Location
from blockferry.repository.smb_storage import SmbLocation


def test_paths_and_file_urls_are_local() -> None:
    assert (scheme("/srv/repo"), scheme("repo"), scheme("file:///srv/repo")) == (LOCAL,) * 3
    assert local_path("file:///srv/my%20repo") == Path("/srv/my repo")
    with pytest.raises(ConfigError, match="mount a remote share"):
        local_path("file://nas/srv/repo")


def test_s3_locations() -> None:
    assert scheme("S3://b/p") == S3
    assert s3_location("s3://backups/site-a/x/?endpoint=http://s3:9000&profile=gw") == (
        S3Location("backups", "site-a/x/", "http://s3:9000", None, "gw")
    )
    assert s3_location("s3://backups").prefix == ""
    with pytest.raises(ConfigError, match="unknown parameter secret"):
        s3_location("s3://backups/p?secret=x")


def test_smb_locations(tmp_path: Path) -> None:
    where, password_file = smb_location("smb://backup@nas:1445/vault/site-a?password_file=/run/p")
    assert scheme("smb://u@h/s") == SMB
    assert where == SmbLocation("nas", 1445, "vault", "site-a/", "backup")
    assert password_file == Path("/run/p")
    assert smb_location("smb://u@nas/vault?password_file=p")[0].port == 445
    with pytest.raises(ConfigError, match="never in the location"):
        smb_location("smb://u:secret@nas/vault?password_file=p")
    with pytest.raises(ConfigError, match="never in the location"):
        smb_location("smb://u@nas/vault")
    with pytest.raises(ConfigError, match="names a user, a host and a share"):
        smb_location("smb://nas/vault?password_file=p")
    readable = tmp_path / "password"
    readable.write_text("x")
    readable.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        open_storage(f"smb://u@nas/vault?password_file={readable}")


def test_unknown_schemes_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'ftp'"):
        scheme("ftp://host/x")
