"""Two sites, each with its own Kafka cluster, joined by MirrorMaker 2 through one relay
(the WAN link): source movers, the dedupe index and the orchestrator on-site, the
target mover and its repository off-site, every role its own process."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MeshProcesses, make_disk
from tests.two_sites import PLACEMENT, Repositories, Sites, running_two_sites

pytestmark = pytest.mark.e2e

BLOCK = 256 * 1024


@pytest.fixture(params=["plaintext"])
def sites(request: pytest.FixtureRequest, tmp_path: Path, topic_prefix: str) -> Iterator[Sites]:
    """Both sites; a test asks for their clusters secured with ``sasl_ssl`` (each its
    own CA and SCRAM users, ACLs from ``blockferry acls --site … --on …``) by
    parametrizing this fixture indirectly."""
    with running_two_sites(tmp_path / "sites", topic_prefix, request.param) as running:
        yield running


@pytest.fixture
def mesh(sites: Sites, topic_prefix: str, tmp_path: Path) -> Iterator[MeshProcesses]:
    """The roles on their sites, the repository off-site."""
    mesh = MeshProcesses(sites.onsite, topic_prefix, tmp_path, role_env=sites.role_env())
    try:
        mesh.up(shards=2)
        sites.wait_until_known(mesh)
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


@pytest.mark.parametrize("sites", ["plaintext", "sasl_ssl"], indirect=True)
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
    for role in ("orchestrator", "source-mover"):
        mesh.role_env[role] = sites.offsite_env()
        mesh.start(role)
    listed = mesh.cli_json("restore-points", "--job", "vm")["restore_points"]
    assert [point["id"] for point in listed] == [backup["restore_point"]]
    sessions = mesh.cli_json("sessions", "list")
    assert backup["session"] in {s["session"] for s in sessions["sessions"]}, "history came"
    mesh.assert_restores(backup["restore_point"], disk)


def test_a_link_cut_longer_than_every_timeout_delays_a_backup_and_loses_nothing(
    mesh: MeshProcesses, sites: Sites, tmp_path: Path
) -> None:
    """The WAN down for 45 s (MirrorMaker's requests time out after 30 s) while a
    backup runs: the session completes once the link is back, with no operator action."""
    disk = make_disk(tmp_path / "vm.img", 48, seed=34)
    mesh.kill("source-mover")
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="4")
    session = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d")["session"]
    mesh.wait_for_progress(session, 0.2)
    sites.relay.cut()
    time.sleep(30)
    during = mesh.api("GET", f"/api/v1/sessions/{session}").json()
    assert during["state"] not in ("success", "failed"), during
    assert "waiting for the link to site offsite" in during["waiting"], during
    time.sleep(15)
    sites.relay.restore()
    ended = mesh.follow(session, timeout=400)
    assert ended["state"] == "success", ended
    assert ended["waiting"] == ""
    mesh.assert_restores(ended["restore_point"], disk)
    checked = mesh.cli_json("repo", "check", mesh.location, "--read-data")
    assert checked["ok"] is True, checked


@pytest.mark.parametrize("sites", ["sasl_ssl"], indirect=True)
def test_the_link_limit_holds_what_crosses_to_its_rate(
    mesh: MeshProcesses, sites: Sites, tmp_path: Path
) -> None:
    """``blockferry link-limit``'s quotas on MirrorMaker's principal: a backup's chunks
    leave, and a restore's stream comes back, no faster than the rate (the relay's
    clock), and all of them arrive."""
    rate = 512 * 1024
    sites.limit_link(rate)
    disk = make_disk(tmp_path / "vm.img", 32, seed=35)
    started = time.monotonic()
    backup, carried, stored = _backup(mesh, sites, disk, "vm")
    took = time.monotonic() - started
    assert stored > 8 * 2**20, "the disk's data crossed"
    assert took >= _least_time(carried, rate), f"{carried} bytes left in {took:.1f} s"

    carried, started = sites.relay.total(), time.monotonic()
    mesh.assert_restores(backup["restore_point"], disk)
    carried, took = sites.relay.total() - carried, time.monotonic() - started
    assert carried > 8 * 2**20, "the restore stream crossed"
    assert took >= _least_time(carried, rate), f"{carried} bytes came back in {took:.1f} s"


def _least_time(carried: int, rate: int) -> float:
    """The least time a quota lets ``carried`` bytes take: Kafka measures a rate over
    its 11 one-second windows as if the first ten had passed, so a transfer's first 10
    s worth go at full speed (with a fifth off for the relay's count of overheads)."""
    return 0.8 * max(0, carried - 10 * rate) / rate


def test_mirror_maker_killed_mid_backup_resumes_and_the_backup_completes(
    mesh: MeshProcesses, sites: Sites, tmp_path: Path
) -> None:
    """MirrorMaker 2 SIGKILLed while a backup's chunks cross, and started again: it
    resumes from the source offsets it committed, records since then cross twice, and
    the off-site target mover stores each chunk once; no role is restarted."""
    disk = make_disk(tmp_path / "vm.img", 48, seed=36)
    mesh.kill("source-mover")
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="4")
    carried, stored = sites.relay.total(), _repository_bytes(mesh)
    session = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d")["session"]
    mesh.wait_for_progress(session, 0.3)
    sites.kill_mirror()
    time.sleep(5)
    sites.start_mirror()
    ended = mesh.follow(session, timeout=400)
    assert ended["state"] == "success", ended
    carried, stored = sites.relay.total() - carried, _repository_bytes(mesh) - stored
    assert carried < 2 * stored, f"{carried} bytes crossed for {stored} stored"
    mesh.assert_restores(ended["restore_point"], disk)
    assert mesh.cli_json("verify", ended["restore_point"])["ok"] is True


def test_a_copy_from_the_on_site_repository_crosses_once_and_restores_off_site(
    tmp_path: Path, topic_prefix: str
) -> None:
    """A repository on each site: ``local`` on-site behind the gateway (the backups),
    ``default`` off-site behind the target mover (their copies, made with ``local``'s
    parameters). A backup's chunks stay home; a copy sends over the link only what
    ``default`` lacks, and restores from there."""
    roles = {"onsite": (*PLACEMENT.sites["onsite"], "gateway"), "offsite": ("target-mover",)}
    served = Repositories(target_mover=("default",), gateway=("local",))
    with running_two_sites(
        tmp_path / "sites", topic_prefix, roles=roles, repositories=served
    ) as sites:
        mesh = MeshProcesses(sites.onsite, topic_prefix, tmp_path, role_env=sites.role_env())
        try:
            _copy_across(mesh, sites, tmp_path)
        finally:
            mesh.close()


def _copy_across(mesh: MeshProcesses, sites: Sites, tmp_path: Path) -> None:
    local = tmp_path / "local-repository"
    key = tmp_path / "repository-keys" / "local.key"
    mesh.init_repository("--shards", "2", "--block-size", "256")
    params = ["--copy-params-from", mesh.location, "--from-key-file", str(mesh.key_file)]
    mesh.cli(
        "repo", "init", str(local), "--key-file", str(key), "--shards", "2", *params, check=True
    )
    dedupe_key = tmp_path / "keys" / "local.key"
    mesh.cli(
        "repo", "export-dedupe-key", str(local), str(dedupe_key), "--key-file", str(key), check=True
    )
    mesh.env["BLOCKFERRY_GATEWAY__REPOSITORIES"] = json.dumps({"local": str(local)})
    mesh.start_all()
    mesh.start("gateway")
    sites.wait_until_known(mesh, "default", "local")

    def backup(disk: Path) -> tuple[dict[str, Any], int]:
        carried = sites.relay.total()
        session = mesh.cli_json(
            "backup", str(disk), "--job", "vm", "--disk", "d", "--repo", "local", "--wait"
        )
        assert session["state"] == "success", session
        return session, sites.relay.total() - carried

    def copy(restore_point: str) -> tuple[dict[str, Any], int, int]:
        carried, stored = sites.relay.total(), _repository_bytes(mesh)
        session = mesh.cli_json(
            "copy", restore_point, "--repo", "local", "--to", "default", "--wait"
        )
        assert session["state"] == "success", session
        return session, sites.relay.total() - carried, _repository_bytes(mesh) - stored

    disk = make_disk(tmp_path / "vm.img", 32, seed=37)
    full, carried = backup(disk)
    assert carried < 2**20, f"{carried} bytes crossed for an on-site backup"
    first, carried, stored = copy(full["restore_point"])
    assert first["counters"]["blocks_sent"] == full["counters"]["blocks_sent"]
    assert stored > 2**20, "the copy's data is off-site"
    assert stored * 0.95 <= carried <= stored * 1.1, (carried, stored)

    with disk.open("r+b") as f:  # two blocks change
        f.seek(3 * BLOCK)
        f.write(b"\x3c" * BLOCK)
        f.seek(30 * BLOCK)
        f.write(b"\x3d" * BLOCK)
    incremental, _ = backup(disk)
    second, carried, stored = copy(incremental["restore_point"])
    assert second["counters"]["blocks_sent"] == 2, second["counters"]
    assert carried < 2 * BLOCK + 2**20, f"{carried} bytes crossed for two changed blocks"

    mesh.assert_restores(incremental["restore_point"], disk, repository="default")
    assert mesh.cli_json("verify", incremental["restore_point"])["ok"] is True
