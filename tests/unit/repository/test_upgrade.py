"""``repo upgrade``: a version 1 repository, with restore points, becomes version 2 in
place; killed at each of its steps, every restore point still restores, and running it
again finishes it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from blockferry.cli import main
from blockferry.failpoints import Point
from blockferry.repository import Repository, restore_disk, verify
from blockferry.repository.config import CONFIG_VERSION
from blockferry.repository.local_storage import LocalStorage
from tests.unit.repository.repo_helpers import (
    BLOCK_SIZE,
    as_version_1,
    backup,
    make_image,
    root,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGES = {"ab": make_image("aB0", tail=99), "cd": make_image("cdA")}


@pytest.fixture
def version_1(tmp_path: Path) -> Repository:
    """A version 1 repository holding two restore points."""
    repo = Repository.init(tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=2)
    for pattern, image in IMAGES.items():
        backup(repo, pattern, {"sda": image})
    old = as_version_1(repo)
    assert old.config.version == 1
    return old


def config_version(repo: Repository) -> int:
    return int(json.loads((root(repo) / "config.json").read_bytes())["version"])


def every_point_restores(repo: Repository, tmp_path: Path) -> None:
    opened = Repository.open(root(repo))
    for point in opened.restore_points():
        out = tmp_path / f"{point.id}.img"
        restore_disk(opened, point.id, "sda", out, force=True)
        assert out.read_bytes() == IMAGES[point.job]
    assert verify(opened).ok
    opened.close()


def test_a_version_1_repository_is_upgraded_in_place(version_1: Repository, tmp_path: Path) -> None:
    before = json.loads((root(version_1) / "config.json").read_bytes())
    assert version_1.upgrade()
    after = json.loads((root(version_1) / "config.json").read_bytes())
    assert after["version"] == CONFIG_VERSION and after["encryption"] == {"mode": "none"}
    unchanged = ("id", "created", "block_size", "shard_count", "dedupe_key")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    every_point_restores(version_1, tmp_path)
    backup(version_1, "ab", {"sda": IMAGES["ab"]})  # dedupes against what version 1 wrote
    assert not Repository.open(root(version_1)).upgrade(), "version 2 already"


UPGRADE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from blockferry import failpoints
    from blockferry.repository import Repository

    failpoints.arm([sys.argv[2]], None)
    Repository.open(Path(sys.argv[1])).upgrade()
    """
)


@pytest.mark.parametrize(
    ("point", "version"),
    [(Point.UPGRADE_STARTED, 1), (Point.UPGRADE_CONFIG_WRITTEN, CONFIG_VERSION)],
)
def test_an_upgrade_killed_at_each_step_loses_nothing_and_runs_again(
    version_1: Repository, tmp_path: Path, point: Point, version: int
) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", UPGRADE, str(root(version_1)), point.value],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert killed.returncode == -9, killed.stderr
    assert config_version(version_1) == version
    every_point_restores(version_1, tmp_path)  # its lock, left behind, blocks no read

    runner = CliRunner()
    again = runner.invoke(main, ["repo", "upgrade", str(root(version_1)), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == {"upgraded": version == 1, "version": CONFIG_VERSION}
    assert config_version(version_1) == CONFIG_VERSION
    with Repository.open(LocalStorage(root(version_1))).exclusive_lock("after", wait=0):
        pass  # the killed upgrade's lock holds nobody up
    every_point_restores(version_1, tmp_path)
