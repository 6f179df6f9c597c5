"""Two sites, each with its own Kafka cluster, joined by MirrorMaker 2 through one relay
(the WAN link): source movers, the dedupe index and the orchestrator on-site, the
target mover and its repository off-site, every role its own process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MeshProcesses, make_disk
from tests.two_sites import Sites, running_two_sites

pytestmark = pytest.mark.e2e

BLOCK = 256 * 1024


@pytest.fixture
def sites(tmp_path: Path, topic_prefix: str) -> Iterator[Sites]:
    with running_two_sites(tmp_path / "sites", topic_prefix) as running:
        yield running


@pytest.fixture
def mesh(sites: Sites, topic_prefix: str, tmp_path: Path) -> Iterator[MeshProcesses]:
    """The roles on their sites, the repository off-site."""
    mesh = MeshProcesses(sites.onsite, topic_prefix, tmp_path, role_env=sites.role_env())
    try:
        mesh.up(shards=2)
        yield mesh
    finally:
        mesh.close()


def _repository_bytes(mesh: MeshProcesses) -> int:
    return sum(f.stat().st_size for f in mesh.repository.rglob("*") if f.is_file())


def _backup(
    mesh: MeshProcesses, sites: Sites, disk: Path, job: str
) -> tuple[dict[str, Any], int, int]:
    """A backup of ``disk`` under ``job``: its session, the bytes the link carried both
    ways and the bytes the off-site repository gained meanwhile."""
    carried, stored = sites.relay.total(), _repository_bytes(mesh)
    session = mesh.cli_json("backup", str(disk), "--job", job, "--disk", "d", "--wait")
    assert session["state"] == "success", session
    return session, sites.relay.total() - carried, _repository_bytes(mesh) - stored


def test_a_chunk_crosses_once_and_the_backups_restore_from_off_site(
    mesh: MeshProcesses, sites: Sites, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "vm.img", 32, seed=31)
    _, full_carried, full_stored = _backup(mesh, sites, disk, "vm")
    assert full_stored > 2**20, "the off-site repository holds the disk's data"
    assert full_carried >= full_stored * 0.95, "every new chunk crossed the link"

    with disk.open("r+b") as f:  # two blocks change
        f.seek(5 * BLOCK)
        f.write(b"\x5a" * BLOCK)
        f.seek(40 * BLOCK + 7)
        f.write(b"changed")
    incremental, carried, _ = _backup(mesh, sites, disk, "vm")
    assert incremental["counters"]["blocks_sent"] <= 2
    assert carried < full_carried * 0.1, "an incremental sends only what changed"

    copy = tmp_path / "copy.img"
    shutil.copyfile(disk, copy)
    second, carried, stored = _backup(mesh, sites, copy, "another-vm")
    assert second["counters"]["blocks_deduplicated_global"] > 0
    assert carried < full_carried * 0.05, "the dedupe index on-site knew every chunk"
    assert stored < full_stored * 0.05

    mesh.assert_restores(incremental["restore_point"], disk)
    assert mesh.cli_json("verify", incremental["restore_point"])["ok"] is True


def test_the_dedupe_index_rebuilds_from_the_mirrored_changelog(
    mesh: MeshProcesses, sites: Sites, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "vm.img", 24, seed=32)
    _, full_carried, _ = _backup(mesh, sites, disk, "vm")
    mesh.kill("dedupe-index")
    shutil.rmtree(tmp_path / "dedupe-index")  # its store lost with its host
    mesh.start("dedupe-index")
    second, carried, _ = _backup(mesh, sites, disk, "same-disk-elsewhere")
    assert second["counters"]["blocks_sent"] == 0, second["counters"]
    assert carried < full_carried * 0.05


def test_with_the_on_site_cluster_lost_an_off_site_orchestrator_restores(
    mesh: MeshProcesses, sites: Sites, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "vm.img", 16, seed=33)
    backup, _, _ = _backup(mesh, sites, disk, "vm")
    for role in ("orchestrator", "source-mover", "dedupe-index"):
        mesh.kill(role)
    sites.stop_onsite()

    # the operator starts an orchestrator and a source mover off-site
    mesh.start("orchestrator", BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS=sites.offsite)
    mesh.start("source-mover", BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS=sites.offsite)
    listed = mesh.cli_json("restore-points", "--job", "vm")["restore_points"]
    assert [point["id"] for point in listed] == [backup["restore_point"]]
    sessions = mesh.cli_json("sessions", "list")
    assert backup["session"] in {s["session"] for s in sessions["sessions"]}, "history came"
    mesh.assert_restores(backup["restore_point"], disk)
