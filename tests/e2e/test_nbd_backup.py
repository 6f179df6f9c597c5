"""Backups of a qcow2 disk exported by a real qemu-nbd: a full backup over NBD, then an
incremental whose changed blocks come from a QEMU dirty bitmap."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.harness import MeshProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.nbd]

MiB = 1024 * 1024
MISSING = [t for t in ("qemu-img", "qemu-io", "qemu-nbd") if shutil.which(t) is None]
if MISSING:
    pytest.skip(
        f"{', '.join(MISSING)} not installed (apt-get install qemu-utils)", allow_module_level=True
    )


def qemu(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@contextmanager
def exported(image: Path, bitmap: str | None = None) -> Iterator[str]:
    """``image`` exported read-only by qemu-nbd on a unix socket; yields its NBD URI."""
    sock = image.with_suffix(".sock")
    sock.unlink(missing_ok=True)
    args = ["qemu-nbd", "-r", "-t", "-k", str(sock), "-f", "qcow2", "-x", "disk"]
    process = subprocess.Popen(
        [*args, *(["-B", bitmap] if bitmap else []), str(image)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "qemu-nbd did not start"
            time.sleep(0.05)
        yield f"nbd+unix:///disk?socket={sock}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def raw(image: Path, out: Path) -> bytes:
    qemu("qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(out))
    return out.read_bytes()


def test_full_then_dirty_bitmap_incremental_over_nbd(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    image = tmp_path / "vm.qcow2"
    qemu("qemu-img", "create", "-f", "qcow2", str(image), "8M")
    qemu(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0xab 0 1M",
        "-c",
        "write -P 0x11 5M 300k",
        str(image),
    )

    with exported(image) as uri:
        full = mesh.cli_json("backup", uri, "--disk", "d0", "--wait")
    assert (full["state"], full["tracking"]) == ("success", "full")
    assert full["counters"]["blocks_read"] < full["counters"]["blocks_total"], (
        "blocks the export calls zero are not read"
    )
    rp = full["restore_point"]
    restored = tmp_path / "full.img"
    mesh.cli_json("restore", rp, "--to", str(restored))
    assert restored.read_bytes() == raw(image, tmp_path / "full.raw")

    # QEMU tracks the writes after the restore point in a bitmap named after it
    qemu("qemu-img", "bitmap", "--add", str(image), rp)
    qemu(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0xcd 2M 4k",
        "-c",
        "write -P 0xef 7M 256k",
        str(image),
    )
    with exported(image, bitmap=rp) as uri:
        incremental = mesh.cli_json("backup", uri, "--disk", "d0", "--dirty-bitmap", rp, "--wait")
        wrong = mesh.cli_json(
            "backup", uri, "--disk", "d0", "--dirty-bitmap", rp, "--full", "--wait"
        )
    assert (incremental["parent"], incremental["tracking"]) == (rp, "dirty-bitmap")
    c = incremental["counters"]
    assert c["blocks_read"] == 2, c  # the 256 KiB blocks at 2M and 7M
    assert c["blocks_sent"] == 2, c
    assert wrong["tracking"] == "full"
    restored = tmp_path / "incremental.img"
    mesh.cli_json("restore", incremental["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == raw(image, tmp_path / "incremental.raw")


def test_a_bitmap_for_another_restore_point_is_not_trusted(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    image = tmp_path / "vm.qcow2"
    qemu("qemu-img", "create", "-f", "qcow2", str(image), "4M")
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(image))
    with exported(image) as uri:
        mesh.cli_json("backup", uri, "--disk", "d0", "--wait")
    qemu("qemu-img", "bitmap", "--add", str(image), "older")
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 3M 4k", str(image))
    with exported(image, bitmap="older") as uri:
        backup = mesh.cli_json("backup", uri, "--disk", "d0", "--dirty-bitmap", "older", "--wait")
    assert backup["tracking"] == "digest-compare"
    assert "does not track changes since the parent" in backup["warnings"][0]
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", backup["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == raw(image, tmp_path / "vm.raw")
