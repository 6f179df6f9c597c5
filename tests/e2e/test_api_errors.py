"""The REST API answers a failed repository command by the reply's error code, and its
body never shows a path of the repository's server."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import MeshProcesses

UNKNOWN = "20990101T000000Z-00000000"


def test_an_unknown_restore_point_is_404_without_a_server_path(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.up(shards=1)
    requests = [
        ("/api/v1/restores", {"restore_point": UNKNOWN, "destination": str(tmp_path / "d.img")}),
        ("/api/v1/verify", {"restore_point": UNKNOWN}),
    ]
    for path, body in requests:
        response = mesh.api("POST", path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert f"no committed restore point '{UNKNOWN}' in repository default" in response.text
        assert str(mesh.repository) not in response.text
