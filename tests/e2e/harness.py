"""Every role as a separate process, on the session's real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from blockferry.repository import Repository
from blockferry.repository.keys import Secret
from blockferry.repository.locations import open_storage
from blockferry.transport.codec import Codec
from blockferry.transport.kafka import Record, RecordConsumer, RecordProducer
from blockferry.transport.records import Message, SessionEvent

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCKFERRY = [sys.executable, "-m", "blockferry.cli"]
MAKE_DISK = REPO_ROOT / "compose" / "local" / "make_disk.py"
ROLES = ("target-mover", "dedupe-index", "source-mover", "orchestrator")

T = TypeVar("T")


def packed_digests(repo: Repository) -> list[bytes]:
    """The digest of every chunk in the repository's sealed packs (duplicates kept)."""
    return [e.digest for pack in repo.sealed_pack_ids() for e in repo.pack_entries(pack)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_disk(path: Path, size_mib: int, seed: int = 1, tail: int = 12345) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(MAKE_DISK),
            str(path),
            str(size_mib),
            "--seed",
            str(seed),
            "--tail",
            str(tail),
        ],
        check=True,
    )
    return path


class MeshProcesses:
    """Starts, kills and restarts role processes; runs the CLI against them."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        workdir: Path,
        *,
        location: str | None = None,
        owner: str = "target-mover",
        role_env: dict[str, dict[str, str]] | None = None,
        **env: str,
    ) -> None:
        """A mesh whose repository ``default`` is at ``location`` (default: the directory
        :attr:`repository`), owned by ``owner`` (the target mover, or the gateway);
        ``role_env`` adds settings of single roles (another site's cluster)."""
        self.role_env = role_env or {}
        self.workdir = workdir
        self.repository = workdir / "repository"
        self.location = location or str(self.repository)
        self.roles = (owner, *ROLES[1:])
        owner_section = owner.upper().replace("-", "_")
        self.ports = {role: free_port() for role in self.roles}
        self.env = {
            **os.environ,
            "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "BLOCKFERRY_KAFKA__TOPIC_PREFIX": prefix,
            "BLOCKFERRY_DATA_DIR": str(workdir),
            "BLOCKFERRY_API_URL": f"http://127.0.0.1:{self.ports['orchestrator']}",
            f"BLOCKFERRY_{owner_section}__REPOSITORIES": json.dumps({"default": self.location}),
            "BLOCKFERRY_ORCHESTRATOR__LEASE_SECONDS": "15",
            "BLOCKFERRY_REPO_KEY_FILE": str(workdir / "repository-keys" / "default.key"),
            **env,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def init_repository(self, *args: str) -> None:
        """A new repository ``default``, encrypted with a new key file where the target
        mover (and this harness's ``repo`` commands) find it, its dedupe key given to
        the source movers."""
        self.key_file.unlink(missing_ok=True)
        self.cli(
            "repo",
            "init",
            self.location,
            "--key-file",
            str(self.key_file),
            *args,
            check=True,
        )
        key = self.workdir / "keys" / "default.key"
        self.cli("repo", "export-dedupe-key", self.location, str(key), check=True)

    @property
    def key_file(self) -> Path:
        """The key file of repository ``default``."""
        return self.workdir / "repository-keys" / "default.key"

    def open_repository(self) -> Repository:
        """Repository ``default``, opened with its key file."""
        return Repository.open(open_storage(self.location), secret=Secret.key_file(self.key_file))

    def up(self, shards: int, block_kib: int = 256) -> None:
        """A fresh repository, then every role."""
        self.init_repository("--block-size", str(block_kib), "--shards", str(shards))
        self.start_all()

    def start(
        self, role: str, wait: bool = True, name: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start ``role``; ``name`` (default: the role's) names a further instance of it."""
        name = name or role
        port = self.ports.setdefault(name, free_port())
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(
            [*BLOCKFERRY, "run", role],
            env={
                **self.env,
                **self.role_env.get(role, {}),
                "BLOCKFERRY_HTTP__PORT": str(port),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.processes[name] = process
        if wait:
            self.wait_ready(name)
        return process

    def start_all(self) -> None:
        for role in self.roles:
            self.start(role, wait=False)
        for role in self.roles:
            self.wait_ready(role)

    def wait_ready(self, role: str, timeout: float = 90.0) -> None:
        """Wait until the process named ``role`` (a role, or an instance's name) is ready."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ports[role]}/readyz"
        while time.monotonic() < deadline:
            if self.processes[role].poll() is not None:
                raise RuntimeError(f"{role} exited:\n{self.log(role)[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{role} not ready in {timeout} s:\n{self.log(role)[-3000:]}")

    def shards(self, name: str) -> float:
        """How many shards the dedupe-index process ``name`` answers for."""
        for line in self.metrics(name).splitlines():
            if line.startswith("blockferry_dedupe_index_shards "):
                return float(line.split()[1])
        return 0.0

    def wait_for_shards(self, shards: dict[str, int], timeout: float = 60.0) -> None:
        """Wait until each dedupe-index process named holds its number of shards."""
        deadline = time.monotonic() + timeout
        while any(self.shards(name) != n for name, n in shards.items()):
            if time.monotonic() > deadline:
                held = {name: self.shards(name) for name in shards}
                raise RuntimeError(f"dedupe-index shards {held}, not {shards}")
            time.sleep(0.2)

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(role)
        process.send_signal(sig)
        process.wait(timeout=60)

    def log(self, role: str) -> str:
        path = self.workdir / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the orchestrator's REST API with its token (``path``: /api/v1/…)."""
        token = (self.workdir / "api-token").read_text().strip()
        return httpx.request(
            method,
            f"{self.env['BLOCKFERRY_API_URL']}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            **kwargs,
        )

    def metrics(self, role: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.ports[role]}/metrics", timeout=5).text

    def cli(
        self, *args: str, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*BLOCKFERRY, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"blockferry {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> dict[str, Any]:
        result = self.cli(*args, "--json", check=True)
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def session_events(self, session_id: str) -> list[tuple[str, str]]:
        """(disk, state) of every event of ``session_id`` on the session-events topic."""
        return [
            (record.value.disk, record.value.state)
            for record in self.records("session-events")
            if record.key == session_id.encode() and isinstance(record.value, SessionEvent)
        ]

    def records(self, topic: str) -> list[Record]:
        """Every record of the mesh's ``topic`` (named without the prefix) so far."""

        async def read(consumer: RecordConsumer, producer: RecordProducer) -> list[Record]:
            await consumer.assign_all_from_start(self._topic(topic))
            return await consumer.read_to_end()

        return asyncio.run(self._with_clients(read))

    def produce(self, topic: str, message: Message, key: bytes | None) -> None:
        """Produce a record to the mesh's ``topic`` (named without the prefix)."""

        async def send(consumer: RecordConsumer, producer: RecordProducer) -> None:
            await producer.send_and_wait(self._topic(topic), message, key)

        asyncio.run(self._with_clients(send))

    def follow(self, session_id: str, timeout: float = 150) -> dict[str, Any]:
        """The session as it ended (``sessions show --follow``)."""
        followed = self.cli("sessions", "show", session_id, "--follow", "--json", timeout=timeout)
        document: dict[str, Any] = json.loads(followed.stdout)
        return document

    def assert_restores(self, restore_point: str, disk: Path, repository: str = "default") -> None:
        """Restoring ``restore_point`` (of ``repository``) gives ``disk``'s bytes."""
        restored = disk.with_suffix(".restored")
        self.cli_json(
            "restore", restore_point, "--to", str(restored), "--repo", repository, "--force"
        )
        assert restored.read_bytes() == disk.read_bytes()

    def wait_for_progress(self, session_id: str, fraction: float, timeout: float = 60) -> None:
        """Wait until at least ``fraction`` of the session's blocks are done."""
        deadline = time.monotonic() + timeout
        while True:
            session: dict[str, Any] = self.api("GET", f"/api/v1/sessions/{session_id}").json()
            if session["blocks_done"] >= session["blocks_total"] * fraction > 0:
                return
            assert time.monotonic() < deadline, session
            time.sleep(0.1)

    def _topic(self, name: str) -> str:
        return f"{self.env['BLOCKFERRY_KAFKA__TOPIC_PREFIX']}.{name}"

    async def _with_clients(
        self, use: Callable[[RecordConsumer, RecordProducer], Awaitable[T]]
    ) -> T:
        bootstrap = self.env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"]
        codec = Codec()
        producer = RecordProducer(bootstrap, codec, "test")
        consumer = RecordConsumer(bootstrap, codec, producer, self._topic("dead-letter"), "test")
        await producer.start()
        await consumer.start()
        try:
            return await use(consumer, producer)
        finally:
            await consumer.stop()
            await producer.stop()

    def close(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
