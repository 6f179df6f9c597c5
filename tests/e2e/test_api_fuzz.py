"""The REST API fuzzed with schemathesis against a running mesh: whatever an
authenticated client sends to any operation, the answer is never a server error and
matches the schema the API publishes (requests without a token: test_api_token.py).

The mesh has a guest-proxy whose only reachable guest is the test's own sshd, and a job
whose guest scripts only print; the guest-proxy runs no commands on its own host, so
fuzzed jobs with local scripts or snapshot commands are refused, not run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.e2e.harness import MeshProcesses, make_disk
from tests.e2e.test_guest_processing import guest_job, start_guest_proxy
from tests.sshd import SshServer

pytestmark = pytest.mark.e2e

EXAMPLES = 10
"""Generated requests per operation."""


@pytest.fixture(scope="module")
def fuzzed_mesh(
    kafka_bootstrap: str, sshd: SshServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshProcesses]:
    workdir = tmp_path_factory.mktemp("fuzz")
    mesh = MeshProcesses(kafka_bootstrap, f"t{uuid.uuid4().hex[:8]}", workdir)
    try:
        mesh.up(shards=2)
        start_guest_proxy(mesh, sshd)
        disk = make_disk(workdir / "guest.img", 1, seed=9)
        harmless = guest_job(
            "harmless",
            {"sda": disk},
            sshd,
            guest_processing={"pre_freeze": "echo freeze", "post_thaw": "echo thaw"},
        )
        assert mesh.api("POST", "/api/v1/jobs", json=harmless).status_code == 201
        assert mesh.cli_json("jobs", "start", "harmless", "--wait")["state"] == "success"
        yield mesh
    finally:
        mesh.close()


@pytest.mark.timeout(900)  # every operation in one test: about 40 of them, 10 calls each
def test_no_input_makes_a_server_error(fuzzed_mesh: MeshProcesses) -> None:
    url = fuzzed_mesh.env["BLOCKFERRY_API_URL"]
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {token(fuzzed_mesh)}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def calls(case: Any) -> None:
            case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )

        calls()


def token(mesh: MeshProcesses) -> str:
    return (Path(mesh.workdir) / "api-token").read_text().strip()
