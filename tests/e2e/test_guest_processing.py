"""Application-aware processing and snapshots: a job's guest scripts run over SSH on a
real OpenSSH server (the test guest is this machine, the scripts only touch the test's
own files), its disks are read from snapshots, and the freeze limit holds even when a
script hangs or the guest-proxy dies."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MeshProcesses, make_disk
from tests.sshd import SshServer

pytestmark = [pytest.mark.e2e, pytest.mark.ssh]


def guest_job(name: str, disks: dict[str, Path], sshd: SshServer, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "vms": [
            {
                "name": "db",
                "disks": [{"name": d, "source": str(p)} for d, p in disks.items()],
                "guest": {"host": sshd.host, "port": sshd.port, "user": sshd.user},
            }
        ],
        **more,
    }


def stamp(disk: Path, text: str, log: Path) -> str:
    """A guest script: write ``text`` at the start of ``disk`` (what an application
    flushes), then note ``text`` in ``log``."""
    data = shlex.quote(text)
    return (
        f"printf %s {data} | dd of={shlex.quote(str(disk))} bs=1 conv=notrunc status=none"
        f" && echo {data} >> {shlex.quote(str(log))}"
    )


def start_guest_mesh(mesh: MeshProcesses, sshd: SshServer, **orchestrator_env: str) -> None:
    mesh.init_repository("--block-size", "256", "--shards", "2")
    for role in ("target-mover", "dedupe-index", "source-mover"):
        mesh.start(role, wait=False)
    mesh.start("orchestrator", wait=False, **orchestrator_env)
    start_guest_proxy(mesh, sshd)
    for role in ("target-mover", "dedupe-index", "source-mover", "orchestrator"):
        mesh.wait_ready(role)


def start_guest_proxy(mesh: MeshProcesses, sshd: SshServer) -> None:
    mesh.start(
        "guest-proxy",
        BLOCKFERRY_GUEST_PROXY__SSH_CLIENT_KEYS=json.dumps([str(sshd.client_key)]),
        BLOCKFERRY_GUEST_PROXY__KNOWN_HOSTS_FILE=str(sshd.known_hosts),
    )


def run_job(mesh: MeshProcesses, definition: dict[str, Any]) -> dict[str, Any]:
    assert mesh.api("POST", "/api/v1/jobs", json=definition).status_code == 201
    started = mesh.api("POST", f"/api/v1/jobs/{definition['name']}/start").json()
    return follow(mesh, started["id"])


def follow(mesh: MeshProcesses, session_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        session: dict[str, Any] = mesh.api(
            "GET", f"/api/v1/sessions/{session_id}", params={"wait_s": 1}
        ).json()
        if session["state"] in ("success", "warning", "failed", "cancelled"):
            return session
        assert time.monotonic() < deadline, session
        time.sleep(0.1)


def snapshot_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".blockferry-snapshot-" in p.name)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_scripts_run_around_file_copy_snapshots_and_the_disks_are_read_as_frozen(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    mesh = mesh_processes
    start_guest_mesh(mesh, sshd)
    sda = make_disk(tmp_path / "db-sda.img", 4, seed=41)
    sdb = make_disk(tmp_path / "db-sdb.img", 2, seed=42)
    log = tmp_path / "guest.log"
    definition = guest_job(
        "app",
        {"sda": sda, "sdb": sdb},
        sshd,
        guest_processing={
            "pre_freeze": stamp(sda, "FROZEN!!", log),
            "post_thaw": stamp(sda, "THAWED!!", log),
            "freeze_limit_s": 60,
        },
        snapshot={"provider": "file-copy"},
    )

    session = run_job(mesh, definition)

    assert session["state"] in ("success", "warning"), session
    assert lines(log) == ["FROZEN!!", "THAWED!!"], "each script ran once, in order"
    assert sda.read_bytes()[:8] == b"THAWED!!"
    out = tmp_path / "restored-sda.img"
    mesh.cli_json("restore", session["restore_point"], "--disk", "db.sda", "--to", str(out))
    frozen = out.read_bytes()
    assert frozen[:8] == b"FROZEN!!", "the snapshot was taken between freeze and thaw"
    assert frozen[8:] == sda.read_bytes()[8:]
    assert snapshot_leftovers(tmp_path) == [], "every snapshot is deleted at the end"

    steps = [(s["action"], s["vm"] or s["disk"], s["ok"]) for s in session["steps"]]
    assert steps[0] == ("freeze", "db", True)
    assert sorted(steps[1:3]) == [("snapshot", "db.sda", True), ("snapshot", "db.sdb", True)]
    assert steps[3] == ("thaw", "db", True)
    assert sorted(steps[4:]) == [
        ("delete-snapshot", "db.sda", True),
        ("delete-snapshot", "db.sdb", True),
    ]
    freeze = session["steps"][0]
    assert freeze["exit_code"] == 0
    if session["state"] == "warning":  # no reflink on this file system: a plain copy
        assert all("plain copy" in w for w in session["warnings"]), session["warnings"]
    states = [state for disk, state in mesh.session_events(session["id"]) if not disk]
    assert states[:6] == [
        "pending",
        "guest-freeze",
        "snapshot",
        "guest-thaw",
        "transferring",
        "committing",
    ], states


def test_a_freeze_script_hanging_past_the_limit_is_killed_and_the_guest_thawed(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    mesh = mesh_processes
    start_guest_mesh(mesh, sshd)
    sda = make_disk(tmp_path / "sda.img", 2, seed=43)
    log = tmp_path / "guest.log"
    definition = guest_job(
        "hang",
        {"sda": sda},
        sshd,
        guest_processing={
            "pre_freeze": f"echo freeze >> {log}; sleep 617",
            "post_thaw": f"echo thaw >> {log}",
            "freeze_limit_s": 3,
            "on_failure": "warn",
        },
    )

    session = run_job(mesh, definition)

    assert session["state"] == "warning", session
    freeze, thaw = session["steps"]
    assert (freeze["action"], freeze["ok"], freeze["timed_out"]) == ("freeze", False, True)
    assert thaw["action"] == "thaw" and thaw["ok"], thaw
    assert "freeze limit" in thaw["message"], thaw
    assert any("pre-freeze script on VM db failed" in w for w in session["warnings"])
    assert any("freeze limit" in w for w in session["warnings"]), session["warnings"]
    time.sleep(1)
    assert lines(log) == ["freeze", "thaw"], "thawed exactly once"
    hung = subprocess.run(["pgrep", "-f", "sleep 617"], capture_output=True, check=False)
    assert hung.returncode == 1, "the hung script was killed on the guest"
    assert session["restore_point"], "on_failure: warn backs up anyway"


def test_a_failing_script_fails_the_session_when_the_job_says_so(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    mesh = mesh_processes
    start_guest_mesh(mesh, sshd)
    sda = make_disk(tmp_path / "sda.img", 2, seed=44)
    log = tmp_path / "guest.log"
    definition = guest_job(
        "strict",
        {"sda": sda},
        sshd,
        guest_processing={
            "pre_freeze": "echo 'database refused to freeze' >&2; exit 3",
            "post_thaw": f"echo thaw >> {log}",
            "on_failure": "fail",
        },
        snapshot={"provider": "file-copy"},
    )

    session = run_job(mesh, definition)

    assert session["state"] == "failed", session
    assert "database refused to freeze" in session["error"]
    assert "exit code 3" in session["error"]
    assert lines(log) == ["thaw"], "the thaw runs once the freeze has begun"
    assert [t["state"] for t in session["tasks"]] == ["pending"], "no disk was read"
    assert snapshot_leftovers(tmp_path) == []
    points = mesh.cli_json("restore-points", "--job", "strict")["restore_points"]
    assert points == []


def test_a_guest_proxy_killed_while_the_guest_is_frozen_leaves_it_to_thaw_itself(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    mesh = mesh_processes
    start_guest_mesh(mesh, sshd, BLOCKFERRY_ORCHESTRATOR__GUEST_ANSWER_MARGIN_S="3")
    sda = make_disk(tmp_path / "sda.img", 2, seed=45)
    log = tmp_path / "guest.log"
    definition = guest_job(
        "orphan",
        {"sda": sda},
        sshd,
        guest_processing={
            "pre_freeze": f"echo freeze >> {log}; sleep 2",
            "post_thaw": f"echo thaw >> {log}",
            "freeze_limit_s": 5,
        },
    )
    assert mesh.api("POST", "/api/v1/jobs", json=definition).status_code == 201
    started = mesh.api("POST", "/api/v1/jobs/orphan/start").json()
    deadline = time.monotonic() + 30
    while lines(log) != ["freeze"]:
        assert time.monotonic() < deadline, mesh.log("guest-proxy")[-3000:]
        time.sleep(0.05)
    mesh.kill("guest-proxy", signal.SIGKILL)

    deadline = time.monotonic() + 15
    while "thaw" not in lines(log):  # nobody asks: the guest's own watchdog thaws it
        assert time.monotonic() < deadline, lines(log)
        time.sleep(0.1)
    start_guest_proxy(mesh, sshd)
    session = follow(mesh, started["id"])

    assert lines(log) == ["freeze", "thaw"], "thawed once, by the guest itself"
    assert session["state"] == "warning", session
    assert session["restore_point"]
    thaw = session["steps"][-1]
    assert thaw["action"] == "thaw"
    assert "thawed itself" in thaw["message"], thaw


def test_a_cancelled_session_stops_its_tasks_commits_nothing_and_deletes_its_snapshots(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "2")
    mesh.start("target-mover", wait=False)
    mesh.start("orchestrator", wait=False)
    mesh.start("source-mover", wait=False, BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="2")
    start_guest_proxy(mesh, sshd)
    for role in ("target-mover", "orchestrator", "source-mover"):
        mesh.wait_ready(role)
    sda = make_disk(tmp_path / "sda.img", 32, seed=46)
    definition = {
        "name": "long",
        "vms": [{"name": "vm", "disks": [{"name": "sda", "source": str(sda)}]}],
        "snapshot": {"provider": "file-copy"},
    }
    assert mesh.api("POST", "/api/v1/jobs", json=definition).status_code == 201
    started = mesh.api("POST", "/api/v1/jobs/long/start").json()
    deadline = time.monotonic() + 60
    while True:
        session = mesh.api("GET", f"/api/v1/sessions/{started['id']}").json()
        if session["blocks_done"] > 0:
            break
        assert time.monotonic() < deadline, session
        time.sleep(0.1)
    assert snapshot_leftovers(tmp_path), "the mover reads a snapshot"

    stopped = mesh.cli("jobs", "stop", "long", check=True)
    assert "cancelling session" in stopped.stdout
    followed = mesh.cli("sessions", "show", started["id"], "--follow", "--json")
    assert followed.returncode == 1
    document = json.loads(followed.stdout)
    assert document["state"] == "cancelled", document
    assert [t["state"] for t in document["tasks"]] == ["cancelled"]
    assert snapshot_leftovers(tmp_path) == [], "the snapshot is deleted when cancelled too"
    assert mesh.cli_json("restore-points", "--job", "long")["restore_points"] == []
    deadline = time.monotonic() + 10
    while 'blockferry_source_mover_tasks_total{kind="backup",result="cancelled"} 1.0' not in (
        mesh.metrics("source-mover")
    ):
        assert time.monotonic() < deadline, "the mover stopped the task"
        time.sleep(0.2)
    again = mesh.api("POST", f"/api/v1/sessions/{started['id']}/cancel")
    assert again.status_code == 409


def test_an_orchestrator_killed_while_the_guest_is_frozen_thaws_it_and_starts_again(
    mesh_processes: MeshProcesses, sshd: SshServer, tmp_path: Path
) -> None:
    mesh = mesh_processes
    start_guest_mesh(mesh, sshd)
    sda = make_disk(tmp_path / "sda.img", 2, seed=47)
    log = tmp_path / "guest.log"
    definition = guest_job(
        "restarted",
        {"sda": sda},
        sshd,
        guest_processing={
            "pre_freeze": f"echo freeze >> {log}; sleep 2",
            "post_thaw": f"echo thaw >> {log}",
        },
        snapshot={"provider": "file-copy"},
    )
    assert mesh.api("POST", "/api/v1/jobs", json=definition).status_code == 201
    started = mesh.api("POST", "/api/v1/jobs/restarted/start").json()
    deadline = time.monotonic() + 30
    while lines(log) != ["freeze"]:
        assert time.monotonic() < deadline, mesh.log("guest-proxy")[-3000:]
        time.sleep(0.05)
    mesh.kill("orchestrator", signal.SIGKILL)
    mesh.start("orchestrator")

    session = follow(mesh, started["id"])

    assert session["state"] in ("success", "warning"), session
    assert lines(log) == ["freeze", "thaw", "freeze", "thaw"], "thawed, then frozen again"
    assert snapshot_leftovers(tmp_path) == []
    out = tmp_path / "restored.img"
    mesh.cli_json("restore", session["restore_point"], "--to", str(out))
    assert out.read_bytes() == sda.read_bytes()
    states = [state for disk, state in mesh.session_events(session["id"]) if not disk]
    assert states[:2] == ["pending", "guest-freeze"]
    assert states[2:5] == ["guest-freeze", "snapshot", "guest-thaw"], states
