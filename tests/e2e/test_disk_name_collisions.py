"""Two disks of one job named alike in the repository (VM ``a.b`` disk ``c``, VM ``a``
disk ``b.c``: both ``a.b.c``) are refused by the API, naming both; the same name in two
jobs is no collision (restore points are kept per job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MeshProcesses

pytestmark = pytest.mark.e2e


def job(name: str, *vms: tuple[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "vms": [
            {"name": vm, "disks": [{"name": disk, "source": f"/images/{vm}-{disk}.img"}]}
            for vm, disk in vms
        ],
    }


def test_colliding_disk_names_are_refused_naming_both(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.start("orchestrator")

    colliding = job("clash", ("a.b", "c"), ("a", "b.c"))
    for method, path in (("POST", "/api/v1/jobs"), ("PUT", "/api/v1/jobs/clash")):
        refused = mesh.api(method, path, json=colliding)
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["detail"]
        assert error["loc"] == ["body", "vms"], error
        assert "VM 'a.b' disk 'c' and VM 'a' disk 'b.c' are both named 'a.b.c'" in error["msg"]
    assert mesh.api("GET", "/api/v1/jobs/clash").status_code == 404, "nothing was kept"

    assert mesh.api("POST", "/api/v1/jobs", json=job("one", ("a.b", "c"))).status_code == 201
    assert mesh.api("POST", "/api/v1/jobs", json=job("two", ("a", "b.c"))).status_code == 201
    fixed = job("clash", ("a.b", "c"), ("a", "b.d"))
    assert mesh.api("POST", "/api/v1/jobs", json=fixed).status_code == 201
    grown = job("clash", ("a.b", "c"), ("a", "b.d"), ("x.y", "z"), ("x", "y.z"))
    refused = mesh.api("PUT", "/api/v1/jobs/clash", json=grown)
    assert refused.status_code == 422 and "both named 'x.y.z'" in refused.text, refused.text
    kept = mesh.api("GET", "/api/v1/jobs/clash").json()["job"]
    assert [vm["name"] for vm in kept["vms"]] == ["a.b", "a"], "the refused change is not kept"
