"""Restores write only under the restore roots: by name at the orchestrator, and with
links followed where the mover writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core.errors import DestinationError
from blockferry.restore_target import check_named_within, check_within_roots
from blockferry.settings import CommonSettings


def test_a_destination_is_named_under_a_root(tmp_path: Path) -> None:
    roots = [tmp_path / "restores", Path("/dev")]
    check_named_within(str(tmp_path / "restores" / "vm.img"), roots)
    check_named_within("/dev/sdb", roots)
    for bad in ("vm.img", str(tmp_path / "restores" / ".." / "x"), "/etc/passwd", "/device"):
        with pytest.raises(DestinationError, match="under a restore root"):
            check_named_within(bad, roots)


def test_links_are_followed_where_the_mover_writes(tmp_path: Path) -> None:
    root = tmp_path / "restores"
    root.mkdir()
    check_within_roots(root / "vm.img", [root])
    (root / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DestinationError, match="not under a restore root"):
        check_within_roots(root / "out" / "vm.img", [root])
    (tmp_path / "elsewhere.img").write_bytes(b"x")
    (root / "link.img").symlink_to(tmp_path / "elsewhere.img")
    check_within_roots(root / "link.img", [root])  # a link to a file is replaced, not followed


def test_the_data_directory_is_the_root_unless_roots_are_set(tmp_path: Path) -> None:
    assert CommonSettings(data_dir=tmp_path).restore_root_dirs() == [tmp_path]
    settings = CommonSettings(data_dir=tmp_path, restore_roots=[Path("/srv/r"), Path("/dev")])
    assert settings.restore_root_dirs() == [Path("/srv/r"), Path("/dev")]
