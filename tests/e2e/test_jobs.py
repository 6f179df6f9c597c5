"""Jobs from a YAML file and from the REST API, run as sessions whose disks move side by
side and commit as one restore point."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.harness import BLOCKFERRY, MeshProcesses, make_disk

pytestmark = pytest.mark.e2e


def job(name: str, vms: dict[str, dict[str, Path]], **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "vms": [
            {"name": vm, "disks": [{"name": d, "source": str(p)} for d, p in disks.items()]}
            for vm, disks in vms.items()
        ],
        **more,
    }


def restored(mesh: MeshProcesses, restore_point: str, disk: str, to: Path) -> bytes:
    mesh.cli_json("restore", restore_point, "--disk", disk, "--to", str(to))
    return to.read_bytes()


def test_a_job_from_the_jobs_file_backs_up_every_disk_into_one_restore_point(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    web_sda = make_disk(tmp_path / "web-sda.img", 6, seed=1)
    web_sdb = make_disk(tmp_path / "web-sdb.img", 3, seed=2)
    db_sda = make_disk(tmp_path / "db-sda.img", 4, seed=3)
    jobs_file = tmp_path / "jobs.yaml"
    fleet = job(
        "fleet",
        {"web": {"sda": web_sda, "sdb": web_sdb}, "db": {"sda": db_sda}},
        schedule={"cron": "30 1 * * *", "timezone": "Europe/Berlin"},
        retention={"keep_last": 3},
    )
    jobs_file.write_text(yaml.safe_dump({"jobs": [fleet]}))
    mesh.env["BLOCKFERRY_ORCHESTRATOR__JOBS_FILE"] = str(jobs_file)
    mesh.up(shards=2)

    (listed,) = mesh.cli_json("jobs", "list")["jobs"]
    assert (listed["job"]["name"], listed["origin"]) == ("fleet", "file")
    assert listed["next_run"].endswith("+01:00"), "the next run, in the job's time zone"

    first = mesh.cli_json("jobs", "start", "fleet", "--wait")
    assert first["state"] == "success", first
    disks = {task["disk"]: task for task in first["tasks"]}
    assert sorted(disks) == ["db.sda", "web.sda", "web.sdb"]
    assert all(task["parent"] is None for task in first["tasks"])
    points = mesh.cli_json("restore-points", "--job", "fleet")["restore_points"]
    assert [p["id"] for p in points] == [first["restore_point"]]
    assert sorted(d["name"] for d in points[0]["disks"]) == sorted(disks)

    with open(web_sdb, "r+b") as f:  # the second run finds this change by digest
        f.seek(1024 * 1024)
        f.write(b"\xaa" * 4096)
    second = mesh.cli_json("backup", "--job", "fleet", "--wait")  # a job, by another name
    assert second["state"] == "success", second
    tasks = {task["disk"]: task for task in second["tasks"]}
    assert {t["parent"] for t in tasks.values()} == {first["restore_point"]}
    assert tasks["web.sdb"]["counters"]["blocks_sent"] == 1, tasks["web.sdb"]
    assert tasks["web.sda"]["counters"]["blocks_sent"] == 0

    rp = second["restore_point"]
    for disk, source in (("web.sda", web_sda), ("web.sdb", web_sdb), ("db.sda", db_sda)):
        assert restored(mesh, rp, disk, tmp_path / f"{disk}.out") == source.read_bytes(), disk

    # the file's jobs are read-only through the API
    conflict = mesh.api("PUT", "/api/v1/jobs/fleet", json=fleet)
    assert conflict.status_code == 409
    assert "jobs file" in conflict.json()["detail"]


def test_api_jobs_are_validated_kept_across_restarts_and_a_failed_disk_is_a_warning(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    good = make_disk(tmp_path / "good.img", 3, seed=5)
    nightly = job("nightly", {"vm1": {"root": good, "data": tmp_path / "missing.img"}})

    bad = job("bad", {"vm1": {"root": good, "ROOT/x": good}}, schedule={"cron": "61 * * * *"})
    bad["vms"][0]["surprise"] = 1
    rejected = mesh.api("POST", "/api/v1/jobs", json=bad)
    assert rejected.status_code == 422
    where = {".".join(str(p) for p in e["loc"]): e["msg"] for e in rejected.json()["detail"]}
    assert "body.vms.0.disks.1.name" in where, where
    assert "body.vms.0.surprise" in where, where
    assert "not a cron expression" in where["body.schedule.cron"], where

    anonymous = httpx.post(f"{mesh.env['BLOCKFERRY_API_URL']}/api/v1/jobs", json=nightly)
    assert anonymous.status_code == 401

    assert mesh.api("POST", "/api/v1/jobs", json=nightly).status_code == 201
    assert mesh.api("POST", "/api/v1/jobs", json=nightly).status_code == 409

    mesh.kill("orchestrator", signal.SIGKILL)
    mesh.start("orchestrator")
    kept = mesh.api("GET", "/api/v1/jobs/nightly")
    assert kept.status_code == 200, kept.text
    assert kept.json()["origin"] == "api"

    session = mesh.cli("jobs", "start", "nightly", "--wait", "--json")
    document = json.loads(session.stdout)
    assert document["state"] == "warning", document
    tasks = {t["disk"]: t for t in document["tasks"]}
    assert tasks["vm1.root"]["state"] == "success"
    assert tasks["vm1.data"]["state"] == "failed"
    assert "missing.img" in tasks["vm1.data"]["error"]
    assert "1 of 2 disks failed" in document["warnings"][0]
    rp = document["restore_point"]
    assert restored(mesh, rp, "vm1.root", tmp_path / "root.out") == good.read_bytes()

    assert mesh.api("DELETE", "/api/v1/jobs/nightly").status_code == 204
    assert mesh.api("GET", "/api/v1/jobs/nightly").status_code == 404
    mesh.kill("orchestrator", signal.SIGKILL)
    mesh.start("orchestrator")
    assert mesh.api("GET", "/api/v1/jobs/nightly").status_code == 404, "the delete is kept"


def test_a_scheduled_job_runs_twice_while_retention_and_gc_remove_the_oldest_restore_point(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    """Two scheduled runs of a job that keeps one restore point: the second run's
    retention removes the first restore point, and GC frees its chunks while a new
    backup (sharing most of its data) is being written; everything kept restores."""
    mesh = mesh_processes
    mesh.env["BLOCKFERRY_TARGET_MOVER__GC_GRACE"] = "0"
    # a block counted on but removed is asked for again once its wait is over
    mesh.env["BLOCKFERRY_TARGET_MOVER__STORED_WAIT_S"] = "5"
    # slow enough (12 s a run, progress every 1 MiB) that GC runs while the last backup reads
    mesh.env["BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S"] = "1"
    mesh.env["BLOCKFERRY_SOURCE_MOVER__IN_FLIGHT"] = "4"
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "disk.img", 12, seed=7)
    every_minute = job(
        "minutely",
        {"vm": {"sda": disk}},
        schedule={"cron": "* * * * *"},
        retention={"keep_last": 1},
    )
    assert mesh.api("POST", "/api/v1/jobs", json=every_minute).status_code == 201
    next_run = mesh.api("GET", "/api/v1/jobs/minutely").json()["next_run"]

    def scheduled(count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 150
        while True:
            found = mesh.api("GET", "/api/v1/sessions", params={"job": "minutely"}).json()
            ended = [s for s in found if s["state"] in ("success", "warning", "failed")]
            if len(ended) >= count and (count == 1 or ended[-1]["pruned"]):
                return ended
            assert time.monotonic() < deadline, found
            time.sleep(0.5)

    (first,) = scheduled(1)
    assert first["state"] == "success", first
    assert datetime.fromisoformat(first["scheduled_for"]) == datetime.fromisoformat(next_run)
    first_content = disk.read_bytes()
    # the second run: every block new, so the first restore point's packs are all dead
    # once it is pruned
    disk.write_bytes(make_disk(tmp_path / "new.img", 12, seed=8).read_bytes())
    first, second = scheduled(2)
    assert second["state"] == "success", second
    assert second["pruned"]["removed"] == [first["restore_point"]]
    minutes = datetime.fromisoformat(second["scheduled_for"]) - datetime.fromisoformat(
        first["scheduled_for"]
    )
    assert minutes.total_seconds() == 60

    # the first run's content under another job, while GC removes what only the first
    # restore point had: the new backup counted on those chunks, and is not damaged
    copy = tmp_path / "copy.img"
    copy.write_bytes(first_content)
    backup = subprocess.Popen(
        [*BLOCKFERRY, "backup", str(copy), "--job", "copy", "--disk", "d", "--wait", "--json"],
        env=mesh.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        copies = mesh.api("GET", "/api/v1/sessions", params={"job": "copy"}).json()
        if copies and copies[0]["blocks_done"] > 0:
            break
        assert time.monotonic() < deadline, copies
        time.sleep(0.1)
    collected = mesh.cli_json("gc")
    out, err = backup.communicate(timeout=180)
    copied = json.loads(out)

    assert collected["chunks_removed"] > 0, collected
    assert copied["state"] == "success", (copied, err)
    assert restored(mesh, copied["restore_point"], "d", tmp_path / "c.img") == first_content
    assert restored(mesh, second["restore_point"], "vm.sda", tmp_path / "s.img") == (
        disk.read_bytes()
    )
    assert mesh.cli_json("verify")["ok"], "the repository is consistent after GC"


def test_a_jobs_retention_prunes_after_each_run_and_prune_takes_a_policy(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "disk.img", 2, seed=8)
    kept = job("kept", {"vm": {"sda": disk}}, retention={"keep_last": 2})
    assert mesh.api("POST", "/api/v1/jobs", json=kept).status_code == 201

    runs = []
    for n in range(3):
        with open(disk, "r+b") as f:  # every run has something new
            f.write(bytes([n + 1]) * 4096)
        runs.append(mesh.cli_json("jobs", "start", "kept", "--wait"))
        assert runs[-1]["state"] == "success", runs[-1]
    deadline = time.monotonic() + 30
    while True:  # retention runs once the session has ended
        last = mesh.api("GET", f"/api/v1/sessions/{runs[2]['session']}").json()
        if last["pruned"]:
            break
        assert time.monotonic() < deadline, last
        time.sleep(0.2)
    assert last["pruned"]["removed"] == [runs[0]["restore_point"]]
    points = [p["id"] for p in mesh.cli_json("restore-points", "--job", "kept")["restore_points"]]
    assert points == [runs[1]["restore_point"], runs[2]["restore_point"]]

    dry = mesh.cli_json("prune", "--job", "kept", "--keep-last", "1", "--dry-run")
    assert dry["removed"] == [runs[1]["restore_point"]]
    assert dry["kept"] == {runs[2]["restore_point"]: ["last", "newest of vm.sda"]}
    assert len(mesh.cli_json("restore-points", "--job", "kept")["restore_points"]) == 2
    mesh.cli_json("prune", "--job", "kept", "--keep-last", "1")
    (left,) = mesh.cli_json("restore-points", "--job", "kept")["restore_points"]
    assert left["id"] == runs[2]["restore_point"]
    assert restored(mesh, left["id"], "vm.sda", tmp_path / "out.img") == disk.read_bytes()

    no_policy = mesh.api("POST", "/api/v1/prune", json={"job": "default"})
    assert no_policy.status_code == 400
    assert "no retention policy" in no_policy.json()["detail"]
