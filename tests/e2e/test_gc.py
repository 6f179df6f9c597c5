"""Garbage collection through the mesh: after prune it frees the pruned restore points'
chunks, and a backup that counted on those chunks while GC ran is not damaged."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from blockferry.repository import verify
from tests.e2e.harness import MeshProcesses, make_disk


def pack_bytes(repository: Path) -> int:
    return sum(p.stat().st_size for p in (repository / "packs").rglob("*.pack"))


def test_gc_during_a_backup_that_deduplicated_against_the_chunks_it_removes(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_TARGET_MOVER__GC_GRACE"] = "0"
    # a block counted on but removed is asked for again once its wait is over
    mesh.env["BLOCKFERRY_TARGET_MOVER__STORED_WAIT_S"] = "5"
    mesh.up(shards=2)
    shared = make_disk(tmp_path / "shared.img", 24, seed=40)
    other = make_disk(tmp_path / "other.img", 6, seed=41)
    first = mesh.cli_json("backup", str(shared), "--job", "old", "--disk", "d", "--wait")
    mesh.cli_json("backup", str(other), "--job", "old", "--disk", "d", "--wait")
    pruned = mesh.cli_json("prune", "--job", "old", "--keep-last", "1")
    assert pruned["removed"] == [first["restore_point"]]
    before = pack_bytes(mesh.repository)

    # the same data under another job, slowly: the dedupe index knows every block, so
    # it sends almost nothing and counts on the chunks GC is about to remove
    mesh.kill("source-mover")
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="4")
    outcome: dict[str, Any] = {}

    def back_up() -> None:
        result = mesh.cli("backup", str(shared), "--job", "new", "--disk", "d", "--wait", "--json")
        outcome.update(json.loads(result.stdout or "{}"), stderr=result.stderr)

    backing_up = threading.Thread(target=back_up)
    backing_up.start()
    deadline = time.monotonic() + 60
    while True:
        sessions = [s for s in mesh.api("GET", "/api/v1/sessions").json() if s["job"] == "new"]
        if sessions and sessions[0]["blocks_done"] >= sessions[0]["blocks_total"] // 4 > 0:
            break
        assert time.monotonic() < deadline, sessions
        time.sleep(0.1)
    collected = mesh.cli_json("gc")
    backing_up.join(timeout=120)

    # each backup began a generation (the third is the running one's), and GC began
    # the fourth: it kept the packs of the third on
    assert sessions[0]["generation"] == 3, sessions[0]
    assert (collected["generation"], collected["protected_from"]) == (4, 3), collected
    assert collected["chunks_removed"] > 0, collected
    assert collected["bytes_freed"] > 0, collected
    assert outcome["state"] == "success", outcome
    assert outcome["counters"]["blocks_deduplicated_global"] > 0, outcome["counters"]
    assert outcome["counters"]["blocks_resent"] > 0, "the removed chunks were sent again"
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", outcome["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == shared.read_bytes()
    assert verify(mesh.open_repository()).ok

    # with nothing running, a second GC finds nothing to do; the space stays freed
    again = mesh.cli_json("gc")
    assert again["chunks_removed"] == 0, again
    assert pack_bytes(mesh.repository) < before + shared.stat().st_size


def test_gc_meets_a_damaged_restore_point_stops_and_the_operator_recovers(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """The operator's story: one bit of a restore point's restorepoint.json is flipped;
    `blockferry gc` fails naming the file and deletes nothing; `repo check` names it;
    `repo set-aside` lets GC run; the repaired restore point (its file copied back from
    where it was kept), moved back, restores."""
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_TARGET_MOVER__GC_GRACE"] = "0"
    mesh.up(shards=1)
    disk = make_disk(tmp_path / "disk.img", 4, seed=50)
    other = make_disk(tmp_path / "other.img", 4, seed=51)
    newer = make_disk(tmp_path / "newer.img", 4, seed=52)
    kept = mesh.cli_json("backup", str(disk), "--job", "a", "--disk", "d", "--wait")
    mesh.cli_json("backup", str(other), "--job", "b", "--disk", "d", "--wait")
    mesh.cli_json("backup", str(newer), "--job", "b", "--disk", "d", "--wait")
    mesh.cli_json("prune", "--job", "b", "--keep-last", "1")  # other.img's chunks: garbage
    packs = sorted((mesh.repository / "packs").rglob("*.pack"))

    rp_json = mesh.repository / "restorepoints" / "a" / kept["restore_point"] / "restorepoint.json"
    original = rp_json.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 1
    rp_json.write_bytes(flipped)
    refused = mesh.cli("gc")
    assert refused.returncode != 0
    said = "".join(refused.stderr.split())  # the terminal's line breaks left out
    assert "garbagecollectionstopped,nothingwasdeleted" in said, refused.stderr
    assert (
        f"restorepoints/a/{kept['restore_point']}/restorepoint.json:itfailsauthentication" in said
    )
    assert "`blockferryreposet-asidePATHID`" in said
    assert sorted((mesh.repository / "packs").rglob("*.pack")) == packs

    checked = mesh.cli("repo", "check", str(mesh.repository), "--json")
    assert checked.returncode == 1
    problems = json.loads(checked.stdout)["problems"]
    assert [p["path"] for p in problems] == [
        f"restorepoints/a/{kept['restore_point']}/restorepoint.json"
    ]
    aside = mesh.cli_json("repo", "set-aside", str(mesh.repository), kept["restore_point"])
    collected = mesh.cli_json("gc")
    assert collected["chunks_removed"] > 0, collected  # other.img's

    # repaired and moved back, the restore point restores: its chunks were kept
    moved = Path(aside["moved_to"])
    (moved / "restorepoint.json").write_bytes(original)
    moved.rename(rp_json.parent)
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", kept["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()
    assert verify(mesh.open_repository()).ok
