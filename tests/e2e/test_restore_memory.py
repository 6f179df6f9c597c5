"""A restore to a slow destination keeps the source mover's memory bounded: the mover
fetches the stream only as fast as it writes (see source_mover/restore.py), so the
disk waits on the broker, not in the mover. Every role is its own process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.e2e.harness import MeshProcesses
from tests.unit.repository.repo_helpers import backup

pytestmark = pytest.mark.e2e

DISK_MIB = 128
WRITE_LIMIT_MIB_S = 5
BOUND_MIB = 40
"""Peak RSS over the mover's RSS before the restore: one 4 MiB fetch and the client's
copies of it, a few 1 MiB blocks and their decoded copies (see source_mover/restore.py),
with room for the allocator; the disk is 128 MiB."""


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_restore_to_a_slow_destination_keeps_the_movers_memory_bounded(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "1024", "--shards", "1")
    image = random.Random(7).randbytes(DISK_MIB * 1024 * 1024)  # incompressible
    rp = backup(mesh.open_repository(), "big", {"d0": image}).id
    mesh.start("target-mover")
    mesh.start("orchestrator")
    mover = mesh.start(
        "source-mover", BLOCKFERRY_SOURCE_MOVER__WRITE_LIMIT_MIB_S=str(WRITE_LIMIT_MIB_S)
    )
    before = status_kib(mover.pid, "VmRSS")

    restored = tmp_path / "restored.img"
    result = mesh.cli_json("restore", rp, "--to", str(restored))
    peak = status_kib(mover.pid, "VmHWM")
    grown_mib = (peak - before) / 1024
    print(
        f"source mover RSS before the restore {before / 1024:.1f} MiB, peak {peak / 1024:.1f}"
        f" MiB (+{grown_mib:.1f} MiB) restoring {DISK_MIB} MiB at {WRITE_LIMIT_MIB_S} MiB/s"
        f" in {result['seconds']:.1f} s"
    )
    assert result["state"] == "success", result
    assert result["seconds"] >= DISK_MIB / WRITE_LIMIT_MIB_S * 0.8, "the destination was slow"
    assert restored.read_bytes() == image
    assert grown_mib < BOUND_MIB, f"the mover grew by {grown_mib:.1f} MiB"
