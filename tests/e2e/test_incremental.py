"""Forever-incremental backups through the mesh: each restore point restores on its own,
only changed blocks are read (with a changed-ranges map) or sent (by digest compare)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.e2e.harness import MeshProcesses, make_disk

pytestmark = pytest.mark.e2e

BLOCK = 256 * 1024


def change(disk: Path, seed: int) -> list[dict[str, int]]:
    """A run of new data and scattered 4 KiB writes; returns the changed byte ranges."""
    rng = random.Random(seed)
    size = disk.stat().st_size
    ranges = [{"offset": 3 * BLOCK + 100, "length": 2 * BLOCK}]
    ranges += [{"offset": rng.randrange(0, size - 4096), "length": 4096} for _ in range(5)]
    with disk.open("r+b") as f:
        for r in ranges:
            f.seek(r["offset"])
            f.write(os.urandom(r["length"]))
    return ranges


def test_full_then_incrementals_each_restore_identical(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 12, seed=4)
    images, points = [disk.read_bytes()], []

    full = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d0", "--wait")
    assert (full["parent"], full["tracking"]) == (None, "full")
    points.append(full["restore_point"])

    # digest compare: every block read, only the changed ones sent
    ranges = change(disk, seed=1)
    images.append(disk.read_bytes())
    second = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d0", "--wait")
    assert (second["parent"], second["tracking"]) == (points[0], "digest-compare")
    c = second["counters"]
    assert c["blocks_read"] + c["blocks_hole"] == c["blocks_total"], "every block is looked at"
    assert 0 < c["blocks_sent"] <= 2 + 1 + len(ranges), c
    assert c["blocks_unchanged"] >= c["blocks_total"] - 10
    points.append(second["restore_point"])

    # changed-ranges map: only the named blocks are read
    ranges = change(disk, seed=2)
    images.append(disk.read_bytes())
    map_file = tmp_path / "changes.json"
    map_file.write_text(json.dumps({"since": points[1], "ranges": ranges}))
    third = mesh.cli_json(
        "backup",
        str(disk),
        "--job",
        "vm",
        "--disk",
        "d0",
        "--changed-ranges",
        str(map_file),
        "--wait",
    )
    assert (third["parent"], third["tracking"]) == (points[1], "changed-ranges")
    assert third["warnings"] == []
    c = third["counters"]
    assert c["blocks_read"] <= 3 + len(ranges), c
    assert c["blocks_skipped"] >= c["blocks_total"] - 3 - len(ranges)
    assert c["blocks_done"] == c["blocks_total"], "skipped blocks count as done"
    points.append(third["restore_point"])

    for n, (rp, image) in enumerate(zip(points, images, strict=True)):
        restored = tmp_path / f"restored-{n}.img"
        mesh.cli_json("restore", rp, "--to", str(restored))
        assert restored.read_bytes() == image, f"restore point {n} differs"

    listed = mesh.cli_json("restore-points", "--job", "vm")["restore_points"]
    assert [(p["id"], p["parent"]) for p in listed] == [
        (points[0], None),
        (points[1], points[0]),
        (points[2], points[1]),
    ]


@pytest.mark.parametrize(
    ("make_map", "why"),
    [
        (lambda parent, size: {"since": "20200101T000000Z-00000000", "ranges": []}, "not since"),
        (lambda parent, size: [{"offset": size - 10, "length": 4096}], "beyond the disk"),
    ],
)
def test_untrusted_maps_fall_back_to_digest_compare(
    mesh_processes: MeshProcesses, tmp_path: Path, make_map: object, why: str
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 6, seed=9)
    parent = mesh.cli_json("backup", str(disk), "--wait")["restore_point"]
    change(disk, seed=3)
    map_file = tmp_path / "changes.json"
    map_file.write_text(json.dumps(make_map(parent, disk.stat().st_size)))  # type: ignore[operator]
    backup = mesh.cli_json("backup", str(disk), "--changed-ranges", str(map_file), "--wait")
    assert backup["tracking"] == "digest-compare"
    assert len(backup["warnings"]) == 1 and why in backup["warnings"][0], backup["warnings"]
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", backup["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()

    map_file.write_text(json.dumps([{"offset": "x", "length": 1}]))
    refused = mesh.cli("backup", str(disk), "--changed-ranges", str(map_file), "--wait")
    assert refused.returncode != 0
    assert "changed_ranges" in refused.stderr, "a malformed map is refused, naming it"


def test_same_disk_under_a_second_job_starts_full_and_sends_almost_nothing(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 6, seed=12)
    mesh.wait_for_shards({"dedupe-index": 2})
    mesh.cli_json("backup", str(disk), "--job", "a", "--wait")
    before = sum(p.stat().st_size for p in (mesh.repository / "packs").rglob("*.pack"))
    other = mesh.cli_json("backup", str(disk), "--job", "b", "--wait")
    assert other["tracking"] == "full"
    after = sum(p.stat().st_size for p in (mesh.repository / "packs").rglob("*.pack"))
    assert after == before, "the target side stores no chunk twice"
    c = other["counters"]
    assert c["blocks_deduplicated_global"] > 0, c
    assert c["blocks_sent"] <= c["blocks_deduplicated_global"] // 20, "the source sends ~nothing"
