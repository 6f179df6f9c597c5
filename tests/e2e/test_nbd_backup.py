"""Backups of a qcow2 disk exported by a real qemu-nbd: a full backup over NBD, then an
incremental whose changed blocks come from a QEMU dirty bitmap."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MeshProcesses
from tests.system import need_commands

pytestmark = [pytest.mark.e2e, pytest.mark.nbd]

MiB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def _qemu_utils() -> None:
    need_commands("qemu-utils", "qemu-img", "qemu-io", "qemu-nbd")


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


def bitmaps(image: Path, force_share: bool = False) -> set[str]:
    """The dirty bitmaps in ``image``; ``force_share`` reads while another holds its lock."""
    done = subprocess.run(
        ["qemu-img", "info", *(["-U"] if force_share else []), "--output=json", str(image)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    found = json.loads(done.stdout)["format-specific"]["data"].get("bitmaps", [])
    return {b["name"] for b in found}


def test_a_qcow2_image_is_read_through_qemu_nbd_and_tracked_by_its_own_bitmaps(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """Full, then two incrementals read by the bitmaps blockferry keeps in the image; a
    bitmap leaves the image only once a newer restore point is the parent."""
    mesh = mesh_processes
    mesh.up(shards=2)
    image = tmp_path / "vm.qcow2"
    qemu("qemu-img", "create", "-f", "qcow2", str(image), "8M")
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(image))
    states = [raw(image, tmp_path / "state0.raw")]

    def backup() -> dict[str, Any]:
        result: dict[str, Any] = mesh.cli_json(
            "backup", str(image), "--job", "vm", "--disk", "d0", "--wait"
        )
        assert result["state"] == "success", result
        return result

    full = backup()
    assert full["tracking"] == "full"
    assert full["counters"]["blocks_read"] < full["counters"]["blocks_total"], (
        "the clusters qcow2 never allocated are not read"
    )
    assert bitmaps(image) == {f"blockferry.vm.{full['restore_point']}"}

    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 2M 4k", str(image))
    states.append(raw(image, tmp_path / "state1.raw"))
    first = backup()
    assert (first["parent"], first["tracking"]) == (full["restore_point"], "dirty-bitmap")
    assert first["counters"]["blocks_read"] == 1, first["counters"]
    assert bitmaps(image) == {
        f"blockferry.vm.{full['restore_point']}",
        f"blockferry.vm.{first['restore_point']}",
    }, "the parent's bitmap stays until a newer restore point is the parent"

    qemu(
        "qemu-io", "-f", "qcow2", "-c", "write -P 0xef 6M 8k", "-c", "write -P 1 7M 4k", str(image)
    )
    states.append(raw(image, tmp_path / "state2.raw"))
    second = backup()
    assert (second["parent"], second["tracking"]) == (first["restore_point"], "dirty-bitmap")
    assert second["counters"]["blocks_read"] == 2, second["counters"]
    assert bitmaps(image) == {
        f"blockferry.vm.{first['restore_point']}",
        f"blockferry.vm.{second['restore_point']}",
    }

    for state, point in zip(states, (full, first, second), strict=True):
        restored = tmp_path / f"{point['restore_point']}.img"
        mesh.cli_json("restore", point["restore_point"], "--to", str(restored))
        assert restored.read_bytes() == state, f"restore point {point['restore_point']}"


def failed_backup(mesh: MeshProcesses, image: Path, *args: str) -> dict[str, Any]:
    result = mesh.cli(
        "backup", str(image), "--job", "vm", "--disk", "d0", *args, "--wait", "--json"
    )
    assert result.returncode != 0, result
    document: dict[str, Any] = json.loads(result.stdout)
    assert (document["state"], document["restore_point"]) == ("failed", None)
    return document


def test_a_qcow2_image_without_its_bitmap_is_compared_and_one_in_use_is_refused(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    image = tmp_path / "vm.qcow2"
    qemu("qemu-img", "create", "-f", "qcow2", str(image), "4M")
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(image))
    full = mesh.cli_json("backup", str(image), "--job", "vm", "--disk", "d0", "--wait")
    qemu("qemu-img", "bitmap", "--remove", str(image), f"blockferry.vm.{full['restore_point']}")
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 3M 4k", str(image))

    compared = mesh.cli_json("backup", str(image), "--job", "vm", "--disk", "d0", "--wait")
    assert (compared["state"], compared["tracking"]) == ("success", "digest-compare")
    assert "has no dirty bitmap" in compared["warnings"][0], compared["warnings"]
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", compared["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == raw(image, tmp_path / "vm.raw")

    refused = failed_backup(mesh, image, "--dirty-bitmap", "x")
    assert "--dirty-bitmap is for NBD exports" in refused["error"]

    # a writer (here qemu-nbd serving the image read-write, as a running VM would) holds
    # the image's lock: the backup fails with a clear message and changes nothing
    writer = subprocess.Popen(
        ["qemu-nbd", "-t", "-k", str(tmp_path / "rw.sock"), "-f", "qcow2", str(image)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (tmp_path / "rw.sock").exists():
            assert writer.poll() is None
            time.sleep(0.05)
        before = bitmaps(image, force_share=True)
        busy = failed_backup(mesh, image)
        assert "is a VM running on it?" in busy["error"], busy["error"]
        assert bitmaps(image, force_share=True) == before
    finally:
        writer.terminate()
        writer.wait(timeout=30)
