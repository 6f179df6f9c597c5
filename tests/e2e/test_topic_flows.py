"""After a real backup and restore through the mesh, every topic carries only the
records the table of topics names for it."""

from __future__ import annotations

from pathlib import Path

from blockferry.transport.topics import Topics
from tests.e2e.harness import MeshProcesses, make_disk


def test_every_topic_carries_only_the_records_of_its_flow(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 4, seed=45)
    backup = mesh.cli_json("backup", str(disk), "--job", "j", "--disk", "d", "--wait")
    assert backup["state"] == "success", backup
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", backup["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()

    topics = Topics("p")
    specs = topics.shared_specs() + topics.repository_specs("default", 2, 1000)
    seen = {}
    for spec in specs:
        flow = topics.flow(spec.name)
        assert flow is not None
        name = spec.name.removeprefix("p.")
        names = {record.name for record in mesh.records(name)} - {"Tombstone"}
        assert names <= set(flow.records), (name, names)
        seen[name] = names
    for carried in ("tasks", "task-progress", "default.chunks", "default.requests"):
        assert seen[carried], f"{carried} carried nothing: the check above saw nothing there"
