"""Who may call the API: a token per user, roles (viewer, operator, admin), every
mutating call in the audit log, and HTTPS with a warning when the API is reachable
beyond this host without it."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.harness import MeshProcesses


def _token(mesh: MeshProcesses, name: str, role: str) -> str:
    path = mesh.workdir / f"{name}.token"
    mesh.cli("users", "add", name, "--role", role, "--token-file", str(path), check=True)
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


def _as(mesh: MeshProcesses, token: str, method: str, path: str, **kwargs: object) -> int:
    response = httpx.request(
        method,
        f"{mesh.env['BLOCKFERRY_API_URL']}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )
    return response.status_code


def test_each_role_may_do_only_its_own_and_every_mutating_call_is_audited(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.start("orchestrator")
    viewer, operator = _token(mesh, "vera", "viewer"), _token(mesh, "otto", "operator")
    restore = {"restore_point": "20990101T000000Z-00000000", "destination": str(tmp_path / "x")}

    assert _as(mesh, viewer, "GET", "/api/v1/sessions") == 200
    assert _as(mesh, viewer, "GET", "/api/v1/jobs") == 200
    assert _as(mesh, viewer, "POST", "/api/v1/restores", json=restore) == 403
    assert _as(mesh, viewer, "POST", "/api/v1/backups", json={"source": "/x"}) == 403
    assert _as(mesh, viewer, "GET", "/api/v1/users") == 403
    # an operator runs restores (the repository is not served here: 404, not 403) ...
    assert _as(mesh, operator, "POST", "/api/v1/restores", json=restore) == 404
    # ... but neither collects garbage, prunes, defines jobs nor adds users
    assert _as(mesh, operator, "POST", "/api/v1/gc", json={}) == 403
    assert _as(mesh, operator, "POST", "/api/v1/prune", json={"job": "j"}) == 403
    assert _as(mesh, operator, "DELETE", "/api/v1/jobs/j") == 403
    assert (
        _as(mesh, operator, "POST", "/api/v1/users", json={"name": "eve", "role": "admin"}) == 403
    )

    listed = mesh.cli_json("users", "list")["users"]
    assert [(u["name"], u["role"]) for u in listed] == [
        ("admin", "admin"),
        ("otto", "operator"),
        ("vera", "viewer"),
    ]
    mesh.cli("users", "remove", "vera", check=True)
    assert _as(mesh, viewer, "GET", "/api/v1/sessions") == 401
    assert _as(mesh, "bf_forged", "POST", "/api/v1/restores", json=restore) == 401

    audit = mesh.workdir / "audit.log"
    assert audit.stat().st_mode & 0o777 == 0o600
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    seen = [(e["user"], e["method"], e["path"], e["status"], e["outcome"]) for e in entries]
    assert ("vera", "POST", "/api/v1/restores", 403, "refused") in seen
    assert ("otto", "POST", "/api/v1/restores", 404, "refused") in seen
    assert ("otto", "POST", "/api/v1/gc", 403, "refused") in seen
    assert ("admin", "POST", "/api/v1/users", 201, "ok") in seen
    assert ("admin", "DELETE", "/api/v1/users/vera", 204, "ok") in seen
    assert (None, "POST", "/api/v1/restores", 401, "refused") in seen
    assert not any(e["method"] == "GET" for e in entries)  # reads are not audited
    restored = next(e for e in entries if e["user"] == "otto" and e["path"] == "/api/v1/restores")
    assert restored["body"] == restore and restored["role"] == "operator"
    assert viewer not in audit.read_text() and operator not in audit.read_text()


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = folder / "api.crt", folder / "api.key"
    subprocess.run(
        [
            *"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1".split(),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_the_api_over_https_and_the_warning_without_it_beyond_loopback(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    cert, key = _certificate(tmp_path)
    port = mesh.ports["orchestrator"]
    url = f"https://127.0.0.1:{port}"
    mesh.env |= {
        "BLOCKFERRY_HTTP__TLS_CERT_FILE": str(cert),
        "BLOCKFERRY_HTTP__TLS_KEY_FILE": str(key),
        "BLOCKFERRY_API_URL": url,
        "BLOCKFERRY_API_CA_FILE": str(cert),
    }
    process = mesh.start("orchestrator", wait=False)
    try:
        _wait_https(url, cert)
        assert mesh.cli_json("users", "list")["users"][0]["name"] == "admin"
        mesh.env.pop("BLOCKFERRY_API_CA_FILE")
        untrusted = mesh.cli("users", "list")
        assert untrusted.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr.replace("\n", "")
        assert "without TLS" not in mesh.log("orchestrator")
    finally:
        process.terminate()
        process.wait(30)

    mesh.env.pop("BLOCKFERRY_HTTP__TLS_CERT_FILE")
    mesh.env.pop("BLOCKFERRY_HTTP__TLS_KEY_FILE")
    mesh.env["BLOCKFERRY_API_URL"] = f"http://127.0.0.1:{port}"
    mesh.start("orchestrator", name="open", BLOCKFERRY_HTTP__HOST="0.0.0.0")
    assert "the API listens on 0.0.0.0 without TLS" in mesh.log("open")


def _wait_https(url: str, ca: Path, timeout: float = 90.0) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", verify=context, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready in {timeout} s")
