"""The gateway in front of an S3 bucket (a real MinIO server) and of an SMB share (a
real Samba server): backup, incremental, restore, verify, GC and check through the mesh,
every role its own process; outages, a killed gateway and immutability on S3."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockferry.repository.locations import s3_location
from blockferry.repository.s3_policies import BACKUP, MAINTENANCE, policy
from tests.e2e.harness import MeshProcesses, make_disk, packed_digests
from tests.minio import MinioServer
from tests.samba import SambaServer
from tests.tcp_relay import TcpRelay, relay_to

pytestmark = pytest.mark.e2e


@pytest.fixture
def relay(minio: MinioServer) -> Iterator[TcpRelay]:
    """The way to the store, which a test may cut."""
    host, port = minio.endpoint.removeprefix("http://").split(":")
    with relay_to(host, int(port)) as relay:
        yield relay


@pytest.fixture
def gateway_mesh(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    minio: MinioServer,
    relay: TcpRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[MeshProcesses]:
    """A mesh whose repository is in a new bucket, reached through :func:`relay`,
    served by the gateway; this process and the mesh's get the store's credentials
    from the environment, as an operator's would."""
    for name, value in minio.env().items():
        monkeypatch.setenv(name, value)
    location = f"s3://{minio.new_bucket()}/site-a?endpoint=http://{relay.address}"
    mesh = MeshProcesses(
        kafka_bootstrap, topic_prefix, tmp_path, location=location, owner="gateway"
    )
    try:
        yield mesh
    finally:
        mesh.close()


def test_backup_incremental_restore_gc_on_s3(
    gateway_mesh: MeshProcesses, tmp_path: Path, minio: MinioServer
) -> None:
    mesh = gateway_mesh
    _backup_incremental_restore_prune_gc(mesh, tmp_path)
    billed = dict(  # what the store bills: its HTTP requests, counted by call
        re.findall(
            r'^blockferry_gateway_storage_backend_requests_total\{call="(\w+)",'
            r'repository="default"\} (\S+)$',
            mesh.metrics("gateway"),
            re.M,
        )
    )
    assert float(billed.get("PutObject", 0)) >= 1, billed
    assert float(billed.get("GetObject", 0)) >= 1, billed
    packs = minio.client().list_objects_v2(  # type: ignore[attr-defined]
        Bucket=mesh.location.split("/")[2], Prefix="site-a/packs/"
    )
    assert packs.get("Contents"), "the packs are objects of the bucket, under the prefix"


@pytest.fixture
def smb_mesh(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, samba: SambaServer
) -> Iterator[tuple[MeshProcesses, TcpRelay]]:
    """A mesh whose repository is on the SMB share, reached through a relay a test may
    cut, served by the gateway."""
    password_file = tmp_path / "smb-password"
    password_file.write_text(samba.password)
    password_file.chmod(0o600)
    with relay_to(samba.host, samba.port) as relay:
        location = (
            f"smb://{samba.user}@{relay.address}/{samba.share}/{tmp_path.name}"
            f"?password_file={password_file}"
        )
        mesh = MeshProcesses(
            kafka_bootstrap, topic_prefix, tmp_path, location=location, owner="gateway"
        )
        try:
            yield mesh, relay
        finally:
            mesh.close()


def test_the_shared_folder_case_a_gateway_in_front_of_an_smb_share(
    smb_mesh: tuple[MeshProcesses, TcpRelay], tmp_path: Path, samba: SambaServer
) -> None:
    mesh, _ = smb_mesh
    _backup_incremental_restore_prune_gc(mesh, tmp_path)
    packs = samba.share_dir / tmp_path.name / "packs"
    assert list(packs.rglob("*.pack")), "packs on the share"


def test_the_share_unreachable_for_30_s_mid_backup_delays_the_session_and_loses_nothing(
    smb_mesh: tuple[MeshProcesses, TcpRelay], tmp_path: Path
) -> None:
    mesh, relay = smb_mesh
    _a_backup_outlives_a_30_s_cut(mesh, relay, make_disk(tmp_path / "vm.img", 48, seed=14))


def _backup_incremental_restore_prune_gc(mesh: MeshProcesses, tmp_path: Path) -> None:
    """Through the mesh and its gateway: a full backup, an incremental, a restore and a
    verify of it, prune, GC, the restore again, and check; nothing written locally."""
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm1.img", 24, seed=11)

    full = mesh.cli_json("backup", str(disk), "--job", "vm1", "--wait")
    assert full["state"] == "success"
    with disk.open("r+b") as f:  # change two blocks
        f.seek(3 * 262144)
        f.write(b"\x5a" * 262144)
        f.seek(17 * 262144 + 100)
        f.write(b"changed")
    incremental = mesh.cli_json("backup", str(disk), "--job", "vm1", "--wait")
    assert incremental["state"] == "success"
    counters = incremental["counters"]
    assert counters["blocks_unchanged"] >= counters["blocks_total"] - 10, counters

    mesh.assert_restores(incremental["restore_point"], disk)
    assert mesh.cli_json("verify", incremental["restore_point"])["ok"] is True

    commits = re.search(
        r'^blockferry_gateway_storage_requests_total\{backend="[a-z0-9]+",operation="commit",'
        r'repository="default"\} (\S+)$',
        mesh.metrics("gateway"),
        re.M,
    )
    assert commits is not None and float(commits.group(1)) >= 1, "packs were published"
    assert not (tmp_path / "repository").exists(), "nothing is written locally"
    digests = packed_digests(mesh.open_repository())
    assert len(digests) == len(set(digests)), "a digest is stored once"

    pruned = mesh.cli_json("prune", "--job", "vm1", "--keep-last", "1")
    assert pruned["removed"] == [full["restore_point"]]
    collected = mesh.cli_json("gc")
    assert collected["generation"] == 3, "two backups began generations 1 and 2"
    disk.with_suffix(".restored").unlink()
    mesh.assert_restores(incremental["restore_point"], disk)

    checked = mesh.cli_json("repo", "check", mesh.location, "--read-data")
    assert checked["ok"] is True, checked


def _slow_backup_under_way(mesh: MeshProcesses, disk: Path, read_mib_s: int, done: float) -> str:
    """A new repository and mesh, a backup of ``disk`` read at ``read_mib_s``, waited for
    until ``done`` of it is; returns its session."""
    mesh.init_repository("--block-size", "256", "--shards", "2")
    mesh.start_all()
    mesh.kill("source-mover")
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S=str(read_mib_s))
    session: str = mesh.cli_json("backup", str(disk), "--job", "slow")["session"]
    mesh.wait_for_progress(session, done)
    return session


def test_the_bucket_unreachable_for_30_s_mid_backup_delays_the_session_and_loses_nothing(
    gateway_mesh: MeshProcesses, tmp_path: Path, relay: TcpRelay
) -> None:
    mesh = gateway_mesh
    _a_backup_outlives_a_30_s_cut(mesh, relay, make_disk(tmp_path / "vm.img", 48, seed=12))


def _a_backup_outlives_a_30_s_cut(mesh: MeshProcesses, relay: TcpRelay, disk: Path) -> None:
    """The way to the store cut for 30 s once a fifth of a backup is done: the session
    completes, restores byte-identical, and the repository checks clean."""
    session = _slow_backup_under_way(mesh, disk, read_mib_s=3, done=0.2)
    relay.cut()
    time.sleep(30)
    relay.restore()
    ended = mesh.follow(session, timeout=300)
    assert ended["state"] == "success", ended
    mesh.assert_restores(ended["restore_point"], disk)
    assert "retrying" in mesh.log("gateway"), "the gateway met the outage and waited"
    checked = mesh.cli_json("repo", "check", mesh.location, "--read-data")
    assert checked["ok"] is True, checked


def test_a_gateway_killed_mid_backup_is_restarted_and_the_session_completes(
    gateway_mesh: MeshProcesses, tmp_path: Path
) -> None:
    mesh = gateway_mesh
    disk = make_disk(tmp_path / "vm.img", 32, seed=13)
    session = _slow_backup_under_way(mesh, disk, read_mib_s=4, done=0.4)
    mesh.kill("gateway")
    mesh.start("gateway")
    ended = mesh.follow(session, timeout=300)
    assert ended["state"] == "success", ended
    mesh.assert_restores(ended["restore_point"], disk)
    checked = mesh.cli_json("repo", "check", mesh.location, "--read-data")
    assert checked["ok"] is True, checked


def test_an_append_only_gateway_backs_up_and_leaves_deletion_to_maintenance(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    minio: MinioServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An immutable repository: the gateway holds credentials that cannot delete data,
    refuses GC and prune through the mesh, and `repo prune|gc` with the maintenance
    credentials remove what retention lets go."""
    bucket = minio.new_bucket(retention_days=1)
    location = f"s3://{bucket}/site-a?endpoint={minio.endpoint}"
    where = s3_location(location)
    backup_keys = minio.add_user(policy(where, BACKUP))
    maintenance_keys = minio.add_user(policy(where, MAINTENANCE))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", maintenance_keys.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", maintenance_keys.secret_access_key)
    mesh = MeshProcesses(
        kafka_bootstrap,
        topic_prefix,
        tmp_path,
        location=location,
        owner="gateway",
        BLOCKFERRY_GATEWAY__APPEND_ONLY="true",
    )
    try:
        mesh.init_repository("--block-size", "256", "--shards", "2")  # maintenance keys
        mesh.env["AWS_ACCESS_KEY_ID"] = backup_keys.access_key_id
        mesh.env["AWS_SECRET_ACCESS_KEY"] = backup_keys.secret_access_key
        mesh.start_all()
        first = make_disk(tmp_path / "a.img", 8, seed=21)
        second = make_disk(tmp_path / "b.img", 8, seed=22)
        old = mesh.cli_json("backup", str(first), "--job", "vm", "--disk", "d", "--wait")
        new = mesh.cli_json("backup", str(second), "--job", "vm", "--disk", "d", "--wait")
        assert (old["state"], new["state"]) == ("success", "success")

        refused = mesh.cli("prune", "--job", "vm", "--keep-last", "1")
        assert refused.returncode != 0 and "append-only" in refused.stderr, refused.stderr
        refused = mesh.cli("gc")
        assert refused.returncode != 0 and "append-only" in refused.stderr, refused.stderr
        assert len(mesh.cli_json("restore-points")["restore_points"]) == 2

        mesh.env["AWS_ACCESS_KEY_ID"] = maintenance_keys.access_key_id
        mesh.env["AWS_SECRET_ACCESS_KEY"] = maintenance_keys.secret_access_key
        pruned = mesh.cli_json("repo", "prune", location, "--job", "vm", "--keep-last", "1")
        assert pruned["removed"] == [old["restore_point"]]
        collected = mesh.cli_json("repo", "gc", location)
        assert collected["generation"] == 3, collected
        mesh.assert_restores(new["restore_point"], second)
    finally:
        mesh.close()
