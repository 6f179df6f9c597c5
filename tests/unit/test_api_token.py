"""The REST API answers only requests that carry the orchestrator's bearer token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from blockferry.core.errors import ConfigError
from blockferry.orchestrator.service import Orchestrator
from blockferry.orchestrator.settings import OrchestratorConfig, OrchestratorSettings
from blockferry.web import build_app
from tests.system import unavailable


def api(settings: OrchestratorSettings) -> TestClient:
    """The API of an orchestrator that is not started (no Kafka needed for these routes)."""
    registry = CollectorRegistry()
    app = build_app(registry, ready=lambda: True)
    Orchestrator(settings, registry).routes(app)
    return TestClient(app)


async def test_requests_without_the_token_are_refused(tmp_path: Path) -> None:
    client = api(OrchestratorSettings(data_dir=tmp_path))
    token_file = tmp_path / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600, "only its owner reads the token"
    token = token_file.read_text().strip()
    assert len(token) >= 32

    missing = client.get("/api/v1/repositories")
    assert missing.status_code == 401
    assert "missing API token" in missing.json()["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.get("/api/v1/repositories", headers={"Authorization": "Bearer not-it"})
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "wrong API token")
    basic = client.get("/api/v1/sessions", headers={"Authorization": f"Basic {token}"})
    assert basic.status_code == 401

    good = client.get("/api/v1/repositories", headers={"Authorization": f"Bearer {token}"})
    assert (good.status_code, good.json()) == (200, [])
    assert client.get("/healthz").status_code == 200, "probes need no token"
    assert client.get("/metrics").status_code == 200


async def test_a_given_token_file_is_used_and_kept(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-token-from-a-mounted-secret\n")
    secret.chmod(0o400)
    settings = OrchestratorSettings(
        data_dir=tmp_path / "data", orchestrator=OrchestratorConfig(api_token_file=secret)
    )
    client = api(settings)
    ok = client.get(
        "/api/v1/sessions",
        headers={"Authorization": "Bearer s3cret-token-from-a-mounted-secret"},
    )
    assert ok.status_code == 200
    assert secret.read_text() == "s3cret-token-from-a-mounted-secret\n"
    assert not (tmp_path / "data" / "api-token").exists()

    again = api(OrchestratorSettings(data_dir=tmp_path / "other"))
    first = (tmp_path / "other" / "api-token").read_text()
    api(OrchestratorSettings(data_dir=tmp_path / "other"))
    assert (tmp_path / "other" / "api-token").read_text() == first, "a restart keeps the token"
    assert again.get("/api/v1/sessions").status_code == 401


async def test_an_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(ConfigError, match="empty"):
        api(OrchestratorSettings(orchestrator=OrchestratorConfig(api_token_file=empty)))


async def test_a_token_file_of_this_process_group_is_read(tmp_path: Path) -> None:
    """As Kubernetes mounts a Secret in a pod with an fsGroup: mode 0440, its group the
    pod's own."""
    mounted = tmp_path / "token"
    mounted.write_text("a-mounted-token\n")
    mounted.chmod(0o440)
    os.chown(mounted, -1, os.getegid())
    settings = OrchestratorSettings(
        data_dir=tmp_path / "data", orchestrator=OrchestratorConfig(api_token_file=mounted)
    )
    client = api(settings)
    ok = client.get("/api/v1/sessions", headers={"Authorization": "Bearer a-mounted-token"})
    assert ok.status_code == 200


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
async def test_a_token_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    """Others: any user, or a group that is not this process's own."""
    loose = tmp_path / "token"
    loose.write_text("a-token-others-can-read\n")
    loose.chmod(mode)
    if os.geteuid() != 0:
        unavailable("giving a file another group needs root")
    os.chown(loose, -1, os.getegid() + 1)
    with pytest.raises(ConfigError, match=f"is readable by others \\(mode {mode:o}\\).*chmod 600"):
        api(OrchestratorSettings(orchestrator=OrchestratorConfig(api_token_file=loose)))
