"""An orchestrator killed mid-session carries the session on when it starts again: the
state is on the compacted sessions topic, every transition on the session-events topic."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from blockferry.transport.codec import Codec
from blockferry.transport.kafka import RecordConsumer, RecordProducer
from tests.e2e.harness import MeshProcesses, make_disk


def session_events(mesh: MeshProcesses, session_id: str) -> list[tuple[str, str]]:
    """(disk, state) of every event of ``session_id`` on the session-events topic."""
    bootstrap = mesh.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"]
    prefix = mesh.env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"]

    async def read() -> list[tuple[str, str]]:
        codec = Codec()
        producer = RecordProducer(bootstrap, codec, "test-events")
        consumer = RecordConsumer(bootstrap, codec, producer, f"{prefix}.dead-letter", "test")
        await producer.start()
        await consumer.start()
        try:
            await consumer.assign_all_from_start(f"{prefix}.session-events")
            return [
                (record.fields["disk"], record.fields["state"])
                for record in await consumer.read_to_end()
                if record.key == session_id.encode()
            ]
        finally:
            await consumer.stop()
            await producer.stop()

    return asyncio.run(read())


def test_an_orchestrator_killed_mid_session_carries_it_on(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    mesh.init_repository("--block-size", "256", "--shards", "2")
    mesh.start("target-mover")
    mesh.start("orchestrator")
    # slow enough that the mover is still at it when the orchestrator is back
    mesh.start("source-mover", BLOCKFERRY_SOURCE_MOVER__READ_LIMIT_MIB_S="2")
    disk = make_disk(tmp_path / "vm.img", 32, seed=31)

    started = mesh.cli_json("backup", str(disk), "--disk", "d0")
    session_id = started["session"]
    deadline = time.monotonic() + 60
    while True:
        session: dict[str, Any] = mesh.api("GET", f"/api/v1/sessions/{session_id}").json()
        if session["blocks_done"] >= session["blocks_total"] // 4 > 0:
            break
        assert time.monotonic() < deadline, session
        time.sleep(0.1)
    mesh.kill("orchestrator", signal.SIGKILL)
    time.sleep(1)
    mesh.start("orchestrator")

    followed = mesh.cli("sessions", "show", session_id, "--follow", "--json", timeout=120)
    document = json.loads(followed.stdout)
    assert document["state"] == "success", (document, mesh.log("orchestrator")[-3000:])
    (task,) = document["tasks"]
    assert task["state"] == "success"
    assert task["counters"]["blocks_resumed"] == 0, "the mover carried on; nothing was re-offered"
    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", document["restore_point"], "--to", str(restored))
    assert restored.read_bytes() == disk.read_bytes()

    events = session_events(mesh, session_id)
    assert events == [
        ("", "pending"),
        ("", "transferring"),
        ("d0", "transferring"),
        ("d0", "success"),
        ("", "committing"),
        ("", "success"),
    ], events

    # ended sessions are kept too
    mesh.kill("orchestrator", signal.SIGTERM)
    mesh.start("orchestrator")
    listed = [s["id"] for s in mesh.api("GET", "/api/v1/sessions").json()]
    assert session_id in listed
