"""A real schema registry for tests: Apicurio Registry (its server distribution from
Maven Central, run by ``compose/local/registry.sh``), on 127.0.0.1, a free port,
in-memory storage. Started as a child process and stopped by its pid."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.system import free_port, stop_process

REGISTRY_SH = Path(__file__).resolve().parent.parent / "compose" / "local" / "registry.sh"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SchemaRegistry:
    url: str
    """The Confluent-compatible API's base, as SchemaRegistryClient takes it."""
    log: Path


@contextlib.contextmanager
def schema_registry(workdir: Path) -> Iterator[SchemaRegistry]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "registry.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["bash", str(REGISTRY_SH), "run", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    registry = SchemaRegistry(f"http://127.0.0.1:{port}/apis/ccompat/v7", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the schema registry exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{registry.url}/subjects", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the schema registry not ready in {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield registry
    finally:
        stop_process(process)
