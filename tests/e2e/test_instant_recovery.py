"""Instant recovery and file-level restore of a disk backed up through the mesh: a GPT disk
with ext4, XFS, Btrfs and FAT partitions, each made by its own mkfs from a source tree.

The export is read by standard NBD clients (qemu-img, nbdcopy, nbdinfo), written through
a qcow2 overlay, mirrored to a file by a paused QEMU over QMP, and keeps serving while GC
runs; the files are listed and restored without restoring the disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.disk_images import (
    MiB,
    Partition,
    btrfs,
    ext4,
    fat,
    partitioned,
    run,
    source_tree,
    xfs,
)
from tests.e2e.harness import BLOCKFERRY, MeshProcesses, free_port
from tests.system import need_commands

pytestmark = [pytest.mark.e2e, pytest.mark.nbd]

POSIX_VOLUMES = {"p1": "ext", "p2": "xfs", "p3": "btrfs"}


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GPT disk: p1 ext4, p2 XFS, p3 Btrfs (the POSIX tree), p4 FAT (no symlink)."""
    work = tmp_path_factory.mktemp("images")
    tree = source_tree(work / "tree")
    fat_tree = source_tree(work / "fat-tree", posix=False)
    partitions = [
        Partition(ext4(tree, work / "ext4.img", 32)),
        Partition(xfs(tree, work / "xfs.img", 300)),
        Partition(btrfs(tree, work / "btrfs.img", 120)),
        Partition(fat(fat_tree, work / "fat.img", 32), "uefi"),
    ]
    return partitioned(work / "disk.img", partitions)


def tree_of(disk: Path) -> Path:
    return disk.parent / "tree"


@contextmanager
def serving(mesh: MeshProcesses, *args: str) -> Iterator[str]:
    """``blockferry ARGS`` (an export) running until the block ends, then stopped as
    Ctrl-C stops it; yields the URI it prints first."""
    need_commands("nbdkit", "nbdkit")
    process = subprocess.Popen(
        [*BLOCKFERRY, *args],
        env=mesh.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        uri = process.stdout.readline().strip()
        assert uri, process.stderr and process.stderr.read()
        yield uri
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, process.stderr and process.stderr.read()


@contextmanager
def exported(mesh: MeshProcesses, rp: str, socket: Path) -> Iterator[str]:
    """``blockferry repo export`` serving ``rp`` on ``socket``; yields its URI."""
    with serving(mesh, "repo", "export", mesh.location, rp, "--socket", str(socket)) as uri:
        assert uri == f"nbd+unix:///?socket={socket}"
        yield uri
    assert not socket.exists(), "the export removed its socket"


def qemu_compare(image: Path, uri: str) -> None:
    result = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Images are identical" in result.stdout


def test_an_export_is_the_disk_an_overlay_takes_writes_and_gc_goes_on(
    mesh_processes: MeshProcesses, disk: Path, tmp_path: Path
) -> None:
    need_commands("qemu-utils", "qemu-img", "qemu-io")
    need_commands("libnbd-bin", "nbdcopy", "nbdinfo")
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_TARGET_MOVER__GC_GRACE"] = "0"
    mesh.up(shards=2)
    rp = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d0", "--wait")
    other = tmp_path / "other.img"
    other.write_bytes(os.urandom(3 * MiB))
    mesh.cli_json("backup", str(other), "--job", "other", "--disk", "d0", "--wait")
    other.write_bytes(os.urandom(3 * MiB))
    mesh.cli_json("backup", str(other), "--job", "other", "--disk", "d0", "--wait")

    with exported(mesh, rp["restore_point"], tmp_path / "export.sock") as uri:
        qemu_compare(disk, uri)
        copy = tmp_path / "copy.img"
        run("nbdcopy", uri, copy)
        assert copy.read_bytes() == disk.read_bytes()
        holes = json.loads(
            subprocess.run(
                ["nbdinfo", "--map", "--json", uri], capture_output=True, check=True, timeout=60
            ).stdout
        )
        zero = sum(run["length"] for run in holes if run["type"] & 2)
        assert zero > disk.stat().st_size // 2, "the zero blocks are reported as holes"

        # a VM's disk: a qcow2 overlay on the export takes the writes, the export none
        overlay = tmp_path / "overlay.qcow2"
        run("qemu-img", "create", "-f", "qcow2", "-b", uri, "-F", "raw", overlay)
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", overlay)
        run("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 1M 64k", overlay)
        qemu_compare(disk, uri)

        # the exported restore point is pinned: prune keeps it, and GC runs meanwhile
        mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d0", "--wait")
        pruned = mesh.cli_json("prune", "--job", "vm", "--keep-last", "1")
        assert pruned["kept"][rp["restore_point"]] == ["pinned"], pruned
        mesh.cli_json("prune", "--job", "other", "--keep-last", "1")
        collected = mesh.cli_json("gc")
        assert collected["chunks_removed"] > 0, collected
        qemu_compare(disk, uri)

    pruned = mesh.cli_json("prune", "--job", "vm", "--keep-last", "1")
    assert pruned["removed"] == [rp["restore_point"]], "unpinned once the export ended"


def test_qemu_mirrors_a_disk_running_on_the_export_to_production_storage(
    mesh_processes: MeshProcesses, disk: Path, tmp_path: Path
) -> None:
    """Instant recovery as QEMU does it: the disk runs on a qcow2 overlay whose backing is
    the export, and a block mirror moves it (the overlay's writes included) to a file;
    QEMU is paused with no guest OS and driven over QMP."""
    need_commands("qemu-system-x86", "qemu-system-x86_64")
    from qemu.qmp.legacy import QEMUMonitorProtocol

    mesh = mesh_processes
    mesh.up(shards=1)
    rp = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")["restore_point"]
    with exported(mesh, rp, tmp_path / "export.sock") as uri:
        overlay = tmp_path / "overlay.qcow2"
        run("qemu-img", "create", "-f", "qcow2", "-b", uri, "-F", "raw", overlay)
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", overlay)
        production = tmp_path / "production.raw"
        run("qemu-img", "create", "-f", "raw", production, str(disk.stat().st_size))
        monitor = tmp_path / "qmp.sock"
        qemu = subprocess.Popen(
            [
                "qemu-system-x86_64",
                "-machine", "none",
                "-nodefaults",
                "-display", "none",
                "-S",
                "-qmp", f"unix:{monitor},server=on,wait=off",
                "-blockdev",
                f"driver=qcow2,node-name=vm-disk,file.driver=file,file.filename={overlay}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            qmp = QEMUMonitorProtocol(str(monitor))
            _connect(qmp, qemu)
            qmp.cmd(
                "blockdev-add",
                **{
                    "driver": "raw",
                    "node-name": "production",
                    "file": {"driver": "file", "filename": str(production)},
                },
            )
            qmp.cmd(
                "blockdev-mirror",
                **{"job-id": "move", "device": "vm-disk", "target": "production", "sync": "full"},
            )
            _event(qmp, "BLOCK_JOB_READY")
            qmp.cmd("block-job-complete", device="move")
            completed = _event(qmp, "BLOCK_JOB_COMPLETED")
            assert "error" not in completed["data"], completed
            qmp.close()
        finally:
            qemu.terminate()
            qemu.wait(timeout=30)
    expected = bytearray(disk.read_bytes())
    expected[MiB : MiB + 64 * 1024] = b"\x5a" * (64 * 1024)
    assert production.read_bytes() == bytes(expected)


def _connect(qmp: Any, qemu: subprocess.Popen[bytes]) -> None:
    from qemu.qmp import ConnectError

    deadline = time.monotonic() + 30
    while True:
        try:
            qmp.connect()
            return
        except ConnectError:
            assert qemu.poll() is None, qemu.stderr and qemu.stderr.read()
            assert time.monotonic() < deadline, "QEMU's monitor did not open"
            time.sleep(0.1)


def _event(qmp: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = qmp.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event is not None and event["event"] == name:
            return dict(event)
    raise AssertionError(f"no {name} event from QEMU")


def test_files_are_listed_read_and_restored_without_restoring_the_disk(
    mesh_processes: MeshProcesses, disk: Path, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=1)
    rp = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")["restore_point"]
    tree = tree_of(disk)

    volumes = mesh.cli_json("repo", "files", "ls", mesh.location, rp, "/")["entries"]
    assert {v["name"]: v["filesystem"] for v in volumes} == {**POSIX_VOLUMES, "p4": "fat"}

    for volume, filesystem in POSIX_VOLUMES.items():
        for directory in ("", "etc", "etc/app", "data"):
            listed = mesh.cli_json(
                "repo", "files", "ls", mesh.location, rp, f"/{volume}/{directory}"
            )["entries"]
            expected = sorted(os.listdir(tree / directory))
            assert [e["name"] for e in listed if e["name"] != "lost+found"] == expected
            for entry in listed:
                if entry["name"] == "lost+found":
                    continue
                source = (tree / directory / entry["name"]).lstat()
                assert entry["mode"] == f"{stat.S_IMODE(source.st_mode):04o}", entry
                assert (entry["uid"], entry["gid"]) == (source.st_uid, source.st_gid), entry
                if entry["kind"] == "file":
                    assert entry["size"] == source.st_size
                if filesystem != "xfs":  # a protofile sets no times
                    assert entry["mtime_ns"] // 10**9 == source.st_mtime_ns // 10**9, entry

    cat = mesh.cli("repo", "files", "cat", mesh.location, rp, "/p2/etc/hostname", check=True)
    assert cat.stdout == "restored-vm\n"

    for volume, filesystem in POSIX_VOLUMES.items():
        into = tmp_path / volume
        into.mkdir()
        restored = mesh.cli_json(
            "repo", "files", "restore", mesh.location, rp, f"/{volume}/data", "--to", str(into)
        )
        assert (restored["files"], restored["failed"]) == (3, {}), restored
        mesh.cli_json(
            "repo", "files", "restore", mesh.location, rp, f"/{volume}/etc", "--to", str(into)
        )
        assert_same_tree(tree / "data", into / "data", times=filesystem != "xfs")
        assert_same_tree(tree / "etc", into / "etc", times=filesystem != "xfs")
        sparse = (into / "data" / "sparse.img").stat()
        assert sparse.st_blocks * 512 < 1 * MiB, "the holes stayed holes"

    fat_copy = tmp_path / "fat"
    fat_copy.mkdir()
    mesh.cli_json("repo", "files", "restore", mesh.location, rp, "/p4/DATA", "--to", str(fat_copy))
    assert (fat_copy / "DATA" / "BIG.BIN").read_bytes() == (tree / "data" / "big.bin").read_bytes()


def test_a_damaged_chunk_fails_only_the_file_it_is_under(
    mesh_processes: MeshProcesses, disk: Path, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=1)
    rp = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")["restore_point"]
    repo = mesh.open_repository()
    point = repo.restore_point(rp)
    index = repo.read_fixed_index(point, "d0")
    big = (tree_of(disk) / "data" / "big.bin").read_bytes()
    image = disk.read_bytes()
    # the block of p1 (ext4) holding big.bin's middle: a block of the disk only it fills
    where = image.find(big[MiB : MiB + 4096], 0, 34 * MiB)
    assert where > 0
    damaged = index.digests[where // index.block_size]
    entry = repo.locate(damaged)
    assert entry is not None
    pack = next((mesh.repository / "packs").rglob(f"{entry.pack_id}.pack"))
    with open(pack, "r+b") as file:
        file.seek(entry.offset + 64)
        byte = file.read(1)
        file.seek(entry.offset + 64)
        file.write(bytes([byte[0] ^ 0xFF]))

    into = tmp_path / "out"
    into.mkdir()
    result = mesh.cli(
        "repo", "files", "restore", mesh.location, rp, "/p1/data", "--to", str(into), "--json"
    )
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert list(document["failed"]) == ["/p1/data/big.bin"], document
    assert "chunk" in document["failed"]["/p1/data/big.bin"]
    assert sorted(os.listdir(into / "data")) == ["small.bin", "sparse.img"], "nothing half-written"
    assert (into / "data" / "small.bin").read_bytes() == (
        tree_of(disk) / "data" / "small.bin"
    ).read_bytes()


def assert_same_tree(source: Path, restored: Path, *, times: bool) -> None:
    """Same names, kinds, contents, modes, owners, symlink targets (and mtimes)."""
    for path in [source, *sorted(source.rglob("*"))]:
        twin = restored / path.relative_to(source)
        a, b = path.lstat(), twin.lstat()
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode), twin
        assert (a.st_uid, a.st_gid) == (b.st_uid, b.st_gid), twin
        if path.is_symlink():
            assert os.readlink(path) == os.readlink(twin)
            continue
        assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), twin
        if path.is_file():
            assert path.read_bytes() == twin.read_bytes(), twin
        if times:
            assert a.st_mtime_ns // 10**9 == b.st_mtime_ns // 10**9, twin
    assert sorted(p.name for p in restored.rglob("*")) == sorted(p.name for p in source.rglob("*"))


def test_an_export_on_tcp_takes_only_tls_clients_with_a_certificate_of_its_ca(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    need_commands("libnbd-bin", "nbdinfo")
    mesh = mesh_processes
    mesh.up(shards=1)
    image = tmp_path / "small.img"
    image.write_bytes(os.urandom(2 * MiB))
    rp = mesh.cli_json("backup", str(image), "--disk", "d0", "--wait")["restore_point"]
    refused = mesh.cli("repo", "export", mesh.location, rp, "--listen", "127.0.0.1:1")
    assert refused.returncode == 1
    assert "needs TLS" in refused.stderr

    server, client, stranger = _certificates(tmp_path)
    port = free_port()
    listen = ["--listen", f"127.0.0.1:{port}", "--tls-certificates", str(server)]
    with serving(mesh, "repo", "export", mesh.location, rp, *listen) as uri:
        assert uri == f"nbds://127.0.0.1:{port}/"

        def info(uri: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["nbdinfo", "--size", uri], capture_output=True, text=True, timeout=60
            )

        good = info(f"{uri}?tls-certificates={client}")
        assert good.returncode == 0, good.stderr
        assert int(good.stdout) == 2 * MiB
        assert info(f"nbd://127.0.0.1:{port}/").returncode != 0, "plain NBD is refused"
        assert info(f"{uri}?tls-certificates={stranger}").returncode != 0, "another CA's client"


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """Directories of the server's and a client's files (one CA), and of a client of
    another CA, named as nbdkit and libnbd expect them."""

    def openssl(*args: str | Path) -> None:
        run("openssl", *args)

    def ca(name: str) -> Path:
        key, cert = folder / f"{name}.key", folder / f"{name}.pem"
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                f"/CN={name}", "-keyout", key, "-out", cert)  # fmt: skip
        return cert

    def issued(ca_name: str, directory: Path, role: str, extensions: str) -> Path:
        directory.mkdir()
        shutil.copy(folder / f"{ca_name}.pem", directory / "ca-cert.pem")
        key, request = directory / f"{role}-key.pem", folder / f"{directory.name}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={role}", "-keyout", key,
                "-out", request)  # fmt: skip
        extfile = folder / f"{directory.name}.ext"
        extfile.write_text(extensions + "\n")
        openssl("x509", "-req", "-in", request, "-CA", folder / f"{ca_name}.pem", "-CAkey",
                folder / f"{ca_name}.key", "-CAcreateserial", "-days", "1", "-extfile", extfile,
                "-out", directory / f"{role}-cert.pem")  # fmt: skip
        return directory

    ca("export-ca")
    ca("other-ca")
    server = issued("export-ca", folder / "server", "server",
                    "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")  # fmt: skip
    client = issued("export-ca", folder / "client", "client", "extendedKeyUsage=clientAuth")
    stranger = issued("other-ca", folder / "stranger", "client", "extendedKeyUsage=clientAuth")
    shutil.copy(folder / "export-ca.pem", stranger / "ca-cert.pem")  # trusts the server
    return server, client, stranger


def test_through_the_api_the_repository_owner_serves_files_and_exports(
    mesh_processes: MeshProcesses, disk: Path, tmp_path: Path
) -> None:
    """`blockferry files` and `blockferry export`: the orchestrator asks the target mover,
    which reads the repository it holds (restore roots: the data directory, tmp_path)."""
    mesh = mesh_processes
    mesh.up(shards=1)
    rp = mesh.cli_json("backup", str(disk), "--disk", "d0", "--wait")["restore_point"]
    tree = tree_of(disk)

    listed = mesh.cli_json("files", "ls", rp, "/p3/etc")["entries"]
    assert [e["name"] for e in listed] == sorted(os.listdir(tree / "etc"))
    big = subprocess.run(
        [*BLOCKFERRY, "files", "cat", rp, "/p3/data/big.bin"],
        env=mesh.env,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    assert big == (tree / "data" / "big.bin").read_bytes(), "streamed in several pieces"
    missing = mesh.cli("files", "cat", rp, "/p3/no/such/file")
    assert missing.returncode == 1
    assert "no /p3/no/such/file" in missing.stderr

    into = tmp_path / "restored"
    into.mkdir()
    done = mesh.cli_json("files", "restore", rp, "/p2/etc", "--to", str(into))
    assert (done["files"], done["symlinks"], done["failed"]) == (2, 1, {}), done
    assert_same_tree(tree / "etc", into / "etc", times=False)
    outside = mesh.cli("files", "restore", rp, "/p2/etc", "--to", "/tmp")
    assert outside.returncode == 1
    assert "restore root" in outside.stderr

    with serving(mesh, "export", rp) as uri:
        assert uri.startswith("nbd+unix:///?socket=")
        qemu_compare(disk, uri)
    socket = Path(uri.split("socket=", 1)[1])
    assert not socket.exists(), "the owner stopped the export when the CLI did"


def test_a_job_with_a_catalog_answers_which_restore_points_hold_a_file(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=1)
    tree = source_tree(tmp_path / "tree")
    versions = []
    for text in ("first\n", "the second version\n"):
        (tree / "etc" / "hostname").write_text(text)
        image = ext4(tree, tmp_path / f"fs-{len(versions)}.img", 16)
        versions.append(partitioned(tmp_path / f"disk-{len(versions)}.img", [Partition(image)]))
    source = tmp_path / "vm.img"
    disks = [{"name": "d0", "source": str(source)}]
    job = {"name": "web", "catalog": True, "vms": [{"name": "vm", "disks": disks}]}
    assert mesh.api("POST", "/api/v1/jobs", json=job).status_code == 201
    points = []
    for version in versions:
        shutil.copyfile(version, source)
        points.append(mesh.cli_json("jobs", "start", "web", "--wait")["restore_point"])
    uncatalogued = mesh.cli_json("backup", str(versions[0]), "--job", "adhoc", "--wait")

    found = mesh.cli_json("files", "find", "hostname", "--job", "web")
    assert [(f["restore_point"], f["path"], f["size"]) for f in found["found"]] == [
        (points[0], "/p1/etc/hostname", 6),
        (points[1], "/p1/etc/hostname", 19),
    ]
    assert found["uncatalogued"] == []
    by_path = mesh.cli_json("files", "find", "/p1/data/*.bin")
    assert {(f["restore_point"], f["path"]) for f in by_path["found"]} == {
        (rp, f"/p1/data/{name}") for rp in points for name in ("big.bin", "small.bin")
    }
    assert by_path["uncatalogued"] == [uncatalogued["restore_point"]]
    built = mesh.cli_json("files", "catalog", uncatalogued["restore_point"])
    assert built["entries"] > 5
    offline = mesh.cli_json("repo", "files", "find", mesh.location, "small.bin", "--job", "adhoc")
    assert [f["restore_point"] for f in offline["found"]] == [uncatalogued["restore_point"]]
