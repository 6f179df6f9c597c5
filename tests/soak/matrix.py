"""The failpoint matrix: for each failpoint, run the step into it (the role armed with it
SIGKILLs itself there), start the role again, and check what a user relies on.

After each fault:

* the interrupted session (or prune, or GC) ends within ``STUCK_S``: resumed (it ended
  well after the kill) or failed cleanly (it ended with an error), never left running;
* every restore point reported committed is still listed, and the one the step made
  restores byte-identical to the disk as it was at that backup and verifies;
* ``repo check`` passes, and nothing is left that a later GC or commit could misread:
  no staging of an ended session, no lock of a dead process, no temporary restore
  point directory, no temporary pack (once the packs are sealed), no temporary file
  beside a restore's destination.

At the end of a run every restore point still listed is restored and compared.

The repository of a run is in a directory served by the target mover, or on S3 or an
SMB share served by the gateway (:mod:`tests.soak.stores`); the target mover's points
are then the gateway's, which runs the same ingest.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from blockferry.failpoints import Point
from blockferry.orchestrator.models import ENDED
from blockferry.repository.locations import open_storage
from tests.e2e.harness import BLOCKFERRY, MeshProcesses, make_disk
from tests.soak.stores import Place

STUCK_S = 240.0
"""A session, prune or GC not ended this long after its step began is stuck."""

KILL_WAIT_S = 120.0
"""How long the step may take to reach its failpoint."""

DISK_MIB = 16
BLOCK_KIB = 256
JOB = "soak"
DISK = "d"

ROLE_OF: dict[Point, str] = {  # the role that reaches each point of a local repository
    Point.PACK_FOOTER_WRITTEN: "target-mover",
    Point.PACK_PUBLISHED: "target-mover",
    Point.PACK_SEALED: "target-mover",
    Point.CHANGELOG_PUBLISHED: "target-mover",
    Point.CHUNK_OFFSETS_COMMITTED: "target-mover",
    Point.DEDUPE_INDEX_APPLIED: "dedupe-index",
    Point.DEDUPE_INDEX_ANSWERED: "dedupe-index",
    Point.STAGE_WRITTEN: "target-mover",
    Point.COMMIT_STARTED: "target-mover",
    Point.COMMIT_INDEXES_WRITTEN: "target-mover",
    Point.COMMIT_MARKED: "target-mover",
    Point.COMMIT_DONE: "target-mover",
    Point.PRUNE_DECIDED: "target-mover",
    Point.PRUNE_REMOVED_ONE: "target-mover",
    Point.GC_HALF_SCANNED: "target-mover",
    Point.GC_SCANNED: "target-mover",
    Point.GC_DEAD_PACKS_REMOVED: "target-mover",
    Point.GC_REPACKED: "target-mover",
    Point.GC_DONE: "target-mover",
    Point.RESTORE_BLOCK_WRITTEN: "source-mover",
    Point.RESTORE_WRITTEN: "source-mover",
    Point.SESSION_COMMITTING: "orchestrator",
    Point.LOCK_BUSY: "target-mover",
}

PRUNE_POINTS = {Point.PRUNE_DECIDED, Point.PRUNE_REMOVED_ONE}
GC_POINTS = {
    Point.GC_HALF_SCANNED,
    Point.GC_SCANNED,
    Point.GC_DEAD_PACKS_REMOVED,
    Point.GC_REPACKED,
    Point.GC_DONE,
}
RESTORE_POINTS = {Point.RESTORE_BLOCK_WRITTEN, Point.RESTORE_WRITTEN}

MAX_HIT: dict[Point, int] = {Point.RESTORE_BLOCK_WRITTEN: 40}
"""The hit that kills is drawn from 1..MAX_HIT (default 1): a restore dies anywhere in
its first blocks."""


@dataclass
class Tally:
    """What the faults at one failpoint came to, over every run."""

    runs: int = 0
    hit: int = 0
    sessions_ok: int = 0
    resumed: int = 0
    failed_cleanly: int = 0
    verified: int = 0
    lost: int = 0
    corrupt: int = 0
    stuck: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in (
            "runs",
            "hit",
            "sessions_ok",
            "resumed",
            "failed_cleanly",
            "verified",
            "lost",
            "corrupt",
            "stuck",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems += other.problems


@dataclass
class Outcome:
    """How one step ended: ok, its error, or stuck."""

    ok: bool
    stuck: bool = False
    error: str = ""
    restore_point: str | None = None


class MatrixRun:
    """One run of the matrix: a fresh repository and mesh on a running Kafka."""

    def __init__(self, bootstrap: str, workdir: Path, rng: random.Random, place: Place) -> None:
        self.rng = rng
        self.workdir = workdir
        self.place = place
        self.hits_log = workdir / "failpoints.log"
        owner = place.owner.upper().replace("-", "_")
        self.mesh = MeshProcesses(
            bootstrap,
            f"soak{rng.getrandbits(32):08x}",
            workdir,
            location=place.location,
            owner=place.owner,
            **{
                f"BLOCKFERRY_{owner}__IDLE_SEAL_S": "0.3",
                f"BLOCKFERRY_{owner}__GC_GRACE": "0",
                "BLOCKFERRY_FAILPOINT_LOG": str(self.hits_log),
            },
        )
        self.disk = workdir / "disk.img"
        self.armed: set[str] = set()
        """The roles running with a failpoint armed."""
        self.expected: dict[str, Path] = {}
        """Every restore point reported committed (and not pruned): the disk as it was."""

    # -- the run ------------------------------------------------------------------------

    def run(self, points: list[Point], tallies: dict[str, Tally]) -> None:
        self.mesh.up(shards=2, block_kib=BLOCK_KIB)
        try:
            make_disk(self.disk, DISK_MIB, seed=self.rng.getrandbits(16))
            first = self._backup()
            if not first.ok:
                raise RuntimeError(f"the first backup failed: {first.error}")
            for point in points:
                tally = tallies.setdefault(f"{point.value} [{self.place.backend}]", Tally())
                tally.runs += 1
                try:
                    self._fault(point, tally)
                except Exception as exc:  # the soak goes on; the report names it
                    tally.problems.append(f"{point.value}: the step broke: {exc!r}"[:2000])
                    self._restart(self._role(point), armed=None)
            final = tallies.setdefault(
                f"(every restore point, end of run) [{self.place.backend}]", Tally()
            )
            final.runs += 1
            for rp_id in list(self.expected):
                self._check_restore_point(rp_id, final)
        finally:
            self.mesh.close()

    def _fault(self, point: Point, tally: Tally) -> None:
        began = time.monotonic()
        role = self._role(point)
        hit = self.rng.randint(1, MAX_HIT.get(point, 1))
        step = self._step_for(point)
        self._restart(role, armed=f"{point.value}@{hit}")
        kills_before = self._kills(point)
        outcome = step(role)
        killed = self._kills(point) > kills_before
        if killed:
            tally.hit += 1
        if role in self.armed:  # not killed: disarmed for the checks and the next fault
            self._restart(role, armed=None)
        if outcome.stuck:
            tally.stuck += 1
            tally.problems.append(f"{point.value}: stuck: {outcome.error}")
        elif outcome.ok:
            tally.sessions_ok += 1
            tally.resumed += int(killed)
        else:
            tally.failed_cleanly += 1
        self._check_no_session_running(point, tally)
        self._check_all_listed(point, tally)
        if outcome.ok and outcome.restore_point:
            self._check_restore_point(outcome.restore_point, tally)
        self._check_nothing_stray(point, tally)
        ended = "stuck" if outcome.stuck else "ok" if outcome.ok else "failed"
        print(
            f"soak:   {point.value}@{hit} on {role}: {'killed' if killed else 'not reached'},"
            f" {ended}{': ' + outcome.error[:200] if outcome.error else ''}"
            f" ({time.monotonic() - began:.0f} s)",
            flush=True,
        )

    def _step_for(self, point: Point) -> Callable[[str], Outcome]:
        if point in PRUNE_POINTS:
            return self._prune_step
        if point in GC_POINTS:
            return self._gc_step
        if point in RESTORE_POINTS:
            return self._restore_step
        if point is Point.LOCK_BUSY:
            return self._locked_backup_step
        return self._backup_step

    # -- steps --------------------------------------------------------------------------

    def _backup_step(self, role: str) -> Outcome:
        self._change_disk()
        return self._backup()

    def _locked_backup_step(self, role: str) -> Outcome:
        """A backup while another holds the repository exclusively (a GC elsewhere): the
        target mover dies waiting for the lock, which is let go once it died."""
        self._change_disk()
        repo = self.mesh.open_repository()
        with contextlib.ExitStack() as held:
            held.enter_context(repo.exclusive_lock("soak: another host's garbage collection"))

            def let_go_once_killed() -> None:
                self._wait_exit(role)
                held.close()

            return self._backup(after_start=let_go_once_killed)

    def _prune_step(self, role: str) -> Outcome:
        """Prune to the newest restore point, with at least two to remove."""
        while len(self.expected) < 3:
            self._change_disk()
            self._backup()
        return self._prune()

    def _gc_step(self, role: str) -> Outcome:
        """GC after a prune left garbage: packs wholly dead and packs partly live."""
        for _ in range(2):
            self._change_disk(blocks=12)
            self._backup()
        self._prune()
        return self._command(["gc"])

    def _restore_step(self, role: str) -> Outcome:
        rp_id = max(self.expected)
        destination = self.workdir / "restores" / f"{rp_id}.img"
        destination.parent.mkdir(exist_ok=True)
        destination.unlink(missing_ok=True)
        outcome = self._command(["restore", rp_id, "--to", str(destination)])
        if outcome.ok and destination.read_bytes() != self.expected[rp_id].read_bytes():
            return Outcome(ok=False, error="CORRUPT: the restored disk differs")
        return outcome

    # -- helpers ------------------------------------------------------------------------

    def _role(self, point: Point) -> str:
        """The role that reaches ``point`` in this run: the target mover's are the
        gateway's where the gateway serves the repository."""
        role = ROLE_OF[point]
        return self.place.owner if role == "target-mover" else role

    def _restart(self, role: str, armed: str | None) -> None:
        """Start ``role`` again (stopping it first if it runs), armed or not."""
        process = self.mesh.processes.get(role)
        if process is not None and process.poll() is None:
            self.mesh.kill(role, signal.SIGTERM)
        self.mesh.processes.pop(role, None)
        if armed:
            self.armed.add(role)
        else:
            self.armed.discard(role)
        started = self.mesh.start(
            role, wait=False, BLOCKFERRY_FAILPOINTS=json.dumps([armed] if armed else [])
        )
        try:
            self.mesh.wait_ready(role)
        except RuntimeError:
            if started.poll() != -signal.SIGKILL:  # not its failpoint: a real failure
                raise

    def _prune(self) -> Outcome:
        """Prune the job to its newest restore point: the others going is no loss."""
        outcome = self._command(["prune", "--job", JOB, "--keep-last", "1"])
        listed = self._listed()
        newest = max(self.expected)
        for rp_id in list(self.expected):
            if rp_id != newest and rp_id not in listed:
                del self.expected[rp_id]
        return outcome

    def _listed(self) -> set[str]:
        document = self.mesh.cli_json("restore-points", "--job", JOB)
        return {point["id"] for point in document["restore_points"]}

    def _kills(self, point: Point) -> int:
        if not self.hits_log.exists():
            return 0
        return sum(
            1
            for line in self.hits_log.read_text().splitlines()
            if line.startswith(f"{point.value} ") and line.endswith(" kill")
        )

    def _wait_exit(self, role: str) -> bool:
        process = self.mesh.processes[role]
        try:
            process.wait(timeout=KILL_WAIT_S)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _change_disk(self, blocks: int = 4) -> None:
        """Overwrite a few random blocks: some with new data, some with an old block."""
        size = self.disk.stat().st_size
        block = BLOCK_KIB * 1024
        with self.disk.open("r+b") as out:
            for _ in range(blocks):
                index = self.rng.randrange(size // block)
                out.seek(index * block)
                out.write(self.rng.randbytes(block))

    def _start_backup(self) -> str:
        started = self.mesh.cli_json("backup", str(self.disk), "--job", JOB, "--disk", DISK)
        session: str = started["session"]
        return session

    def _backup(self, after_start: Callable[[], None] | None = None) -> Outcome:
        """Back the disk up (``after_start()`` runs once the session began) and keep a
        copy of the disk as it was, for the restore point it makes."""
        snapshot = self.workdir / "expected" / f"{len(self.expected):04d}-{time.time_ns()}.img"
        snapshot.parent.mkdir(exist_ok=True)
        shutil.copyfile(self.disk, snapshot)
        session = self._start_backup()
        if after_start is not None:
            after_start()
        outcome = self._follow(session)
        if outcome.ok and outcome.restore_point:
            self.expected[outcome.restore_point] = snapshot
        return outcome

    def _follow(self, session_id: str) -> Outcome:
        """Wait for the session to end; start a role killed meanwhile again."""
        deadline = time.monotonic() + STUCK_S
        while time.monotonic() < deadline:
            self._revive()
            try:
                response = self.mesh.api("GET", f"/api/v1/sessions/{session_id}")
            except httpx.TransportError:  # the orchestrator was killed while it answered
                time.sleep(0.5)
                continue
            document: dict[str, Any] = response.json()
            if document["state"] in ("success", "warning"):
                return Outcome(ok=True, restore_point=document.get("restore_point"))
            if document["state"] in ("failed", "cancelled"):
                return Outcome(ok=False, error=str(document.get("error")))
            time.sleep(0.5)
        return Outcome(ok=False, stuck=True, error=f"session {session_id} still running")

    def _revive(self) -> None:
        for role, process in list(self.mesh.processes.items()):
            if process.poll() is not None:
                self._restart(role, armed=None)

    def _command(self, args: list[str]) -> Outcome:
        """Run a CLI command (prune, gc) to its end, reviving a killed role meanwhile."""
        with subprocess.Popen(
            [*BLOCKFERRY, *args, "--json"],
            env=self.mesh.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            deadline = time.monotonic() + STUCK_S
            while process.poll() is None and time.monotonic() < deadline:
                self._revive()
                time.sleep(0.5)
            if process.poll() is None:
                process.kill()
                return Outcome(ok=False, stuck=True, error=f"blockferry {args[0]} did not end")
            stdout, stderr = process.communicate()
        if process.returncode == 0:
            return Outcome(ok=True)
        return Outcome(ok=False, error=(stderr or stdout).strip()[-500:])

    # -- checks -------------------------------------------------------------------------

    def _check_all_listed(self, point: Point, tally: Tally) -> None:
        for rp_id in sorted(set(self.expected) - self._listed()):
            tally.lost += 1
            tally.problems.append(f"{point.value}: LOST restore point {rp_id} (no longer listed)")
            del self.expected[rp_id]

    def _check_restore_point(self, rp_id: str, tally: Tally) -> None:
        destination = self.workdir / "checks" / f"{rp_id}.img"
        destination.parent.mkdir(exist_ok=True)
        destination.unlink(missing_ok=True)
        restored = self.mesh.cli("restore", rp_id, "--to", str(destination), "--json")
        if restored.returncode != 0:
            tally.lost += 1
            tally.problems.append(f"LOST {rp_id}: restore failed: {restored.stderr[-500:]}")
            return
        if destination.read_bytes() != self.expected[rp_id].read_bytes():
            tally.corrupt += 1
            tally.problems.append(f"CORRUPT {rp_id}: restored bytes differ from the source")
            return
        verified = self.mesh.cli("verify", rp_id, "--json")
        if verified.returncode != 0:
            tally.lost += 1
            tally.problems.append(f"LOST {rp_id}: verify failed: {verified.stderr[-500:]}")
            return
        destination.unlink()
        tally.verified += 1

    def _check_no_session_running(self, point: Point, tally: Tally) -> None:
        """Once its step ended, no session of the mesh may still be running."""
        running = [
            f"{session['id']} ({session['kind']}, {session['state']})"
            for session in self.mesh.api("GET", "/api/v1/sessions").json()
            if session["state"] not in ENDED
        ]
        if running:
            tally.stuck += len(running)
            tally.problems.append(f"{point.value}: sessions left running: {', '.join(running)}")

    def _check_nothing_stray(self, point: Point, tally: Tally) -> None:
        checked = self.mesh.cli("repo", "check", self.mesh.location, "--json")
        if checked.returncode != 0:
            tally.corrupt += 1
            tally.problems.append(f"{point.value}: repo check failed: {checked.stdout[-800:]}")
        for stray in self._stray():
            tally.problems.append(f"{point.value}: left behind: {stray}")

    def _stray(self) -> list[str]:
        """What an ended step left: staging, locks, and (on a local repository) the
        temporaries of writers. On a share or bucket, where other hosts may be writing,
        a killed writer's temporaries wait out their hour by design; they are counted
        in the run's output, not taken for a fault."""
        storage = open_storage(self.mesh.location)
        try:
            deadline = time.monotonic() + 10
            while True:  # open packs seal once their partition is idle
                found = [
                    info.name
                    for prefix in ("staging/", "locks/")
                    for info in storage.list_objects(prefix)
                    if info.name != "locks/reserve"
                ]
                leftovers = [info.name for info in storage.leftovers()]
                if self.place.remote:
                    if leftovers:
                        print(f"soak:     temporaries waiting out their hour: {leftovers}")
                else:
                    found += leftovers
                found += [
                    str(path.relative_to(self.workdir))
                    for path in (self.workdir / "restores").glob(".*")
                ]
                if not found or time.monotonic() > deadline:
                    return found
                time.sleep(0.5)
        finally:
            storage.close()
