#!/usr/bin/env python3
"""The rounds of `make bench` (run by bench.sh once Kafka and the roles are up): per
round a full backup into a fresh repository (rN) and a restore through the mesh, then
borg create and extract, and restic backup and restore, of the same image into fresh
repositories of theirs, and the floor (floor.py: our reading, digesting and compressing
of the image without Kafka). Then about 10% of the image's blocks change on a copy (a
contiguous run of random data and scattered 4 KiB writes) and the tools back the copy
up incrementally: ours with a changed-ranges map, ours by digest compare (job benchN-dc
in repository rNdc, whose untimed full backup of the original is its parent), ours
again with an empty map (a session's fixed cost), borg create and restic backup of the
copy into the round's repositories of theirs. Every restore is compared byte for byte
with its source; a difference fails the bench. Prints per-round figures and medians and
writes them to WORK/bench.json.

    bench.py --work DIR --image PATH --rounds N --mesh TEXT [--pid NAME=PID ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zstandard

MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
BIN = Path(sys.executable).parent
BORG_CREATE = ["--chunker-params", "fixed,4194304", "--compression", "zstd,3"]
BORG_ENCRYPTION = "authenticated-blake2"
RESTIC_BACKUP = ["--compression", "auto"]
"""restic's default chunker (content-defined, 512 KiB to 8 MiB) and compression (zstd,
fastest level); restic always encrypts (AES-256-CTR and Poly1305), there is no choice."""
COMPRESSION = "optimal"
TIMED_STEPS = (
    ("ours", "backup", "ours backup"),
    ("ours", "restore", "ours restore"),
    ("borg", "create", "borg create"),
    ("borg", "extract", "borg extract"),
    ("restic", "backup", "restic backup"),
    ("restic", "restore", "restic restore"),
    ("floor", "floor", "floor"),
    ("ours", "incremental_ranges", "ours incr. map"),
    ("ours", "incremental_digest", "ours incr. digest"),
    ("ours", "incremental_nochange", "ours incr. no-chg"),
    ("borg", "create_incremental", "borg incr. create"),
    ("restic", "backup_incremental", "restic incr."),
)
TARGETS = {
    "backup": 0.6,
    "restore": 0.4,
    "ranges": 0.25,
    "digest": 0.5,
    "nochange_s": 0.5,
    "growth": 1.05,
}
"""The figures the bench is held to: our time over borg's (full backup, restore, an
incremental with a map and by digest compare), the no-change incremental's wall
seconds, and an incremental's repository growth over its changed blocks compressed."""
PAGE = 4096
CHANGED_RUN = 0.08
"""The contiguous run of new random data, as a share of the image."""
CHANGED_SCATTERED = 0.02
"""The share of blocks that get one random 4 KiB write each (outside the run)."""
VERIFY_ROUND = 1
"""The round whose incremental restore points (changed-ranges and digest compare) are
restored and compared with the changed copy; restoring every one costs minutes."""


class BenchError(Exception):
    pass


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache; False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        raise BenchError(f"process {pid} of the mesh is gone (see the work dir's logs)") from None
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mib(pid: int) -> float:
    """The most resident memory a process has had (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"process {pid} reports no VmHWM")


def machine_busy() -> float:
    """CPU seconds all CPUs of the machine spent busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as f:
        # user nice system idle iowait irq softirq steal (guest time is within user)
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``path``."""
    apparent = allocated = 0
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def zero_bytes(image: Path, block_size: int) -> int:
    """Bytes of the image in all-zero blocks of ``block_size``."""
    zeros = bytes(block_size)
    total = 0
    with open(image, "rb", buffering=0) as f:
        while block := f.read(block_size):
            if block == zeros[: len(block)]:
                total += len(block)
    return total


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.work: Path = args.work.resolve()
        self.image: Path = args.image.resolve()
        self.size = self.image.stat().st_size
        self.rounds: int = args.rounds
        self.pids: dict[str, int] = dict(args.pid)
        self.restore_dir = self.work / "restore"
        self.changed = self.work / "changed" / self.image.name
        self.changed_ranges: list[dict[str, int]] = []
        self.borg_dir = self.work / "borg"
        self.restic_dir = self.work / "restic"
        self.repos = {
            name: Path(path)
            for name, path in json.loads(
                os.environ["BLOCKFERRY_TARGET_MOVER__REPOSITORIES"]
            ).items()
        }
        self.block_size: int = json.loads((self.repos["r0"] / "config.json").read_text())[
            "block_size"
        ]
        self.caches_dropped = drop_caches()
        self.borg_env = os.environ | {
            "BORG_PASSPHRASE": "bench",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_BASE_DIR": str(self.borg_dir / "home"),
            "BORG_DISPLAY_PASSPHRASE": "no",
        }
        self.restic_env = os.environ | {
            "RESTIC_PASSWORD": "bench",
            "RESTIC_CACHE_DIR": str(self.restic_dir / "cache"),
        }

    # -- running and timing ------------------------------------------------------------

    def run(self, cmd: list[str], cwd: Path | None = None, env: Any = None) -> str:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(
                f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def timed(self, cmd: list[str], cwd: Path | None = None, env: Any = None) -> dict[str, Any]:
        """Run ``cmd`` from a cold page cache (when allowed): wall time, CPU per process."""
        if self.caches_dropped:
            drop_caches()
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        client_before = children_cpu()
        busy_before = machine_busy()
        started = time.perf_counter()
        out = self.run(cmd, cwd, env)
        seconds = time.perf_counter() - started
        busy = machine_busy() - busy_before
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in self.pids.items()}
        cpu["client"] = children_cpu() - client_before
        cpu["other"] = max(0.0, busy - sum(cpu.values()))
        return {"seconds": seconds, "cpu": cpu, "stdout": out}

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """CPU seconds per second each process uses while the mesh has nothing to do."""
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        busy_before = machine_busy()
        time.sleep(seconds)
        busy = machine_busy() - busy_before
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in self.pids.items()}
        cpu["other"] = max(0.0, busy - sum(cpu.values()))
        return {name: value / seconds for name, value in cpu.items()}

    def compare(self, restored: Path, what: str, expected: Path | None = None) -> None:
        expected = expected or self.image
        done = subprocess.run(["cmp", str(expected), str(restored)], capture_output=True)
        if done.returncode != 0:
            message = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise BenchError(
                f"!!! {what} RESTORED WRONG BYTES: {restored} differs from {expected}: {message}"
            )

    def backup(
        self, source: Path, repo: str, job: str, ranges: Path | None = None, timed: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One backup of ours (timed or not): the step and the session's JSON."""
        cmd = [
            str(BIN / "blockferry"),
            "backup",
            str(source),
            "--repo",
            repo,
            "--job",
            job,
            "--disk",
            "disk0",
            "--compression",
            COMPRESSION,
            "--wait",
            "--json",
        ]
        if ranges is not None:
            cmd += ["--changed-ranges", str(ranges)]
        step = self.timed(cmd) if timed else {"stdout": self.run(cmd)}
        session = json.loads(step.pop("stdout"))
        if session["state"] != "success":
            raise BenchError(f"our backup of {source} ({repo}, job {job}) failed: {session}")
        return step, session

    def restore(
        self, restore_point: str, repo: str, expected: Path, what: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore through the mesh (timed), compare with ``expected``, drop the copy."""
        dest = self.restore_dir / f"{restore_point}.img"
        step = self.timed(
            [
                str(BIN / "blockferry"),
                "restore",
                restore_point,
                "--repo",
                repo,
                "--to",
                str(dest),
                "--json",
            ]
        )
        restored = json.loads(step.pop("stdout"))
        if restored["state"] != "success":
            raise BenchError(f"{what} failed: {restored}")
        self.compare(dest, what, expected)
        dest.unlink()
        return step, restored

    # -- one round of each tool --------------------------------------------------------

    def ours(self, n: int) -> dict[str, Any]:
        repo = f"r{n}"
        backup, session = self.backup(self.image, repo, f"bench{n}")
        restore, restored = self.restore(
            session["restore_point"], repo, self.image, f"OUR RESTORE (round {n})"
        )
        apparent, allocated = tree_bytes(self.repos[repo])
        return {
            "backup": backup,
            "restore": restore,
            "restore_point": session["restore_point"],
            "counters": session["counters"],
            "session_seconds": {"backup": session["seconds"], "restore": restored["seconds"]},
            "repository_bytes": allocated,
            "repository_apparent_bytes": apparent,
        }

    def peer(
        self,
        what: str,
        repo: Path,
        restore_to: Path,
        env: Any,
        commands: tuple[list[str], list[str], list[str]],
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
        """A peer's round: init a fresh ``repo``, back the image up and restore it in
        ``restore_to`` (both timed), compare, drop the copy; the two steps and the
        repository's size. ``commands``: init, backup (run beside the image, which it
        names relatively), restore (run in ``restore_to``)."""
        init, backup, restore = commands
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(restore_to, ignore_errors=True)
        restore_to.mkdir(parents=True)
        self.run(init, env=env)
        backed_up = self.timed(backup, cwd=self.image.parent, env=env)
        backed_up.pop("stdout")
        restored = self.timed(restore, cwd=restore_to, env=env)
        restored.pop("stdout")
        self.compare(restore_to / self.image.name, what)
        apparent, allocated = tree_bytes(repo)
        shutil.rmtree(restore_to)
        sizes = {"repository_bytes": allocated, "repository_apparent_bytes": apparent}
        return backed_up, restored, sizes

    def peer_incremental(self, repo: Path, env: Any, backup: list[str]) -> dict[str, Any]:
        """A peer's backup of the changed copy into ``repo`` (timed, run beside the copy),
        with the repository's growth; then the repository goes."""
        before = tree_bytes(repo)
        step = self.timed(backup, cwd=self.changed.parent, env=env)
        step.pop("stdout")
        after = tree_bytes(repo)
        shutil.rmtree(repo)
        step["repository_growth_bytes"] = after[0] - before[0]
        return step

    def borg(self, n: int) -> dict[str, Any]:
        repo = self.borg_dir / f"repo{n}"
        create, extract, sizes = self.peer(
            f"BORG EXTRACT (round {n})",
            repo,
            self.restore_dir / f"borg-{n}",
            self.borg_env,
            (
                ["borg", "init", "-e", BORG_ENCRYPTION, str(repo)],
                ["borg", "create", *BORG_CREATE, f"{repo}::a", self.image.name],
                ["borg", "extract", f"{repo}::a"],
            ),
        )
        return {"create": create, "extract": extract, **sizes}

    def restic(self, n: int) -> dict[str, Any]:
        repo = self.restic_dir / f"repo{n}"
        restic = ["restic", "--quiet", "--repo", str(repo)]
        backup, restore, sizes = self.peer(
            f"RESTIC RESTORE (round {n})",
            repo,
            self.restore_dir / f"restic-{n}",
            self.restic_env,
            (
                [*restic, "init", "--repository-version", "2"],
                [*restic, "backup", *RESTIC_BACKUP, self.image.name],
                [*restic, "restore", "latest", "--target", "."],
            ),
        )
        return {"backup": backup, "restore": restore, **sizes}

    def floor(self) -> dict[str, Any]:
        """floor.py on the image (its own process, like the CLI calls)."""
        step = self.timed(
            [
                sys.executable,
                str(Path(__file__).with_name("floor.py")),
                str(self.image),
                "--block-size",
                str(self.block_size),
                "--compression",
                COMPRESSION,
            ]
        )
        step["inside"] = json.loads(step.pop("stdout"))
        return {"floor": step}

    # -- the changed copy and the incrementals -----------------------------------------

    def change_copy(self, n: int) -> list[dict[str, int]]:
        """Make the changed copy of round ``n`` (untimed): the image with a contiguous run
        of new random data and one random 4 KiB write in each of a few other blocks.
        Round 1 copies the image; later rounds put back the previous round's ranges from
        the image instead of copying it all again. Returns the changed byte ranges."""
        self.changed.parent.mkdir(parents=True, exist_ok=True)
        if not self.changed_ranges:
            self.changed.unlink(missing_ok=True)
            self.run(
                ["cp", "--reflink=auto", "--sparse=always", str(self.image), str(self.changed)]
            )
        else:
            with open(self.image, "rb") as src, open(self.changed, "r+b") as dst:
                for extent in self.changed_ranges:
                    src.seek(extent["offset"])
                    dst.seek(extent["offset"])
                    dst.write(src.read(extent["length"]))
        rng = random.Random(1000 + n)
        bs = self.block_size
        run_length = round(self.size * CHANGED_RUN / PAGE) * PAGE
        run_offset = rng.randrange((self.size - run_length) // PAGE) * PAGE
        ranges = [{"offset": run_offset, "length": run_length}]
        in_run = range(run_offset // bs, (run_offset + run_length - 1) // bs + 1)
        whole_blocks = self.size // bs
        others = [i for i in range(whole_blocks) if i not in in_run]
        for i in rng.sample(others, round(-(-self.size // bs) * CHANGED_SCATTERED)):
            ranges.append({"offset": i * bs + rng.randrange(bs // PAGE) * PAGE, "length": PAGE})
        ranges.sort(key=lambda extent: extent["offset"])
        with open(self.changed, "r+b") as f:
            for extent in ranges:
                f.seek(extent["offset"])
                left = extent["length"]
                while left:
                    data = rng.randbytes(min(left, 16 * MIB))
                    f.write(data)
                    left -= len(data)
        os.sync()
        self.changed_ranges = ranges
        return ranges

    def changed_blocks(self, ranges: list[dict[str, int]]) -> tuple[int, int]:
        """(blocks the ranges touch, their zstd level 3 compressed size in the copy)."""
        bs = self.block_size
        touched: set[int] = set()
        for extent in ranges:
            first = extent["offset"] // bs
            touched.update(range(first, (extent["offset"] + extent["length"] - 1) // bs + 1))
        compressor = zstandard.ZstdCompressor(level=3)
        compressed = 0
        with open(self.changed, "rb") as f:
            for i in sorted(touched):
                f.seek(i * bs)
                compressed += len(compressor.compress(f.read(bs)))
        return len(touched), compressed

    def incrementals(self, n: int, parent: str) -> dict[str, Any]:
        """Round ``n``'s incrementals of ours, each from a cold page cache: (a) with a
        changed-ranges map, (c) right after with an empty map, (b) by digest compare in
        rNdc. The parents of (a) and (b) are full backups of the same image."""
        repo, job, dc_repo, dc_job = f"r{n}", f"bench{n}", f"r{n}dc", f"bench{n}-dc"
        _, dc_full = self.backup(self.image, dc_repo, dc_job, timed=False)
        ranges = self.change_copy(n)
        blocks_changed, compressed = self.changed_blocks(ranges)
        maps = self.changed.parent
        (maps / "ranges.json").write_text(json.dumps({"since": parent, "ranges": ranges}))

        def check(session: dict[str, Any], what: str, parent: str, tracking: str) -> None:
            if session["parent"] != parent or session["tracking"] != tracking:
                raise BenchError(
                    f"{what} of round {n}: parent {session['parent']}, tracking"
                    f" {session['tracking']!r}; expected {parent}, {tracking!r}"
                    f" (warnings: {session.get('warnings')})"
                )

        before = tree_bytes(self.repos[repo])
        ranges_step, a = self.backup(self.changed, repo, job, maps / "ranges.json")
        after = tree_bytes(self.repos[repo])
        check(a, "the changed-ranges incremental", parent, "changed-ranges")
        (maps / "empty.json").write_text(json.dumps({"since": a["restore_point"], "ranges": []}))
        nochange_step, c = self.backup(self.changed, repo, job, maps / "empty.json")
        check(c, "the no-change incremental", a["restore_point"], "changed-ranges")
        digest_step, b = self.backup(self.changed, dc_repo, dc_job)
        check(b, "the digest-compare incremental", dc_full["restore_point"], "digest-compare")
        verified: dict[str, float] = {}
        if n == VERIFY_ROUND:
            for what, session, where in (("changed-ranges", a, repo), ("digest", b, dc_repo)):
                step, _ = self.restore(
                    session["restore_point"],
                    where,
                    self.changed,
                    f"OUR RESTORE OF THE {what.upper()} INCREMENTAL (round {n})",
                )
                verified[what] = step["seconds"]
        return {
            "incremental_ranges": ranges_step,
            "incremental_digest": digest_step,
            "incremental_nochange": nochange_step,
            "incremental": {
                "ranges": len(ranges),
                "bytes_changed": sum(extent["length"] for extent in ranges),
                "blocks_changed": blocks_changed,
                "blocks_changed_compressed_bytes": compressed,
                "repository_growth_bytes": after[0] - before[0],
                "repository_growth_allocated_bytes": after[1] - before[1],
                "restores_verified_seconds": verified,
                "sessions": {
                    name: {
                        k: session[k]
                        for k in ("restore_point", "parent", "tracking", "seconds", "counters")
                    }
                    for name, session in (("ranges", a), ("digest", b), ("nochange", c))
                },
            },
        }

    def borg_incremental(self, n: int) -> dict[str, Any]:
        """borg create of the changed copy into round ``n``'s repository (archive b)."""
        repo = self.borg_dir / f"repo{n}"
        return self.peer_incremental(
            repo, self.borg_env, ["borg", "create", *BORG_CREATE, f"{repo}::b", self.changed.name]
        )

    def restic_incremental(self, n: int) -> dict[str, Any]:
        """restic backup of the changed copy into round ``n``'s repository."""
        repo = self.restic_dir / f"repo{n}"
        return self.peer_incremental(
            repo,
            self.restic_env,
            ["restic", "--quiet", "--repo", str(repo), "backup", *RESTIC_BACKUP, self.changed.name],
        )

    # -- the whole bench ---------------------------------------------------------------

    def main(self, mesh: str) -> dict[str, Any]:
        self.restore_dir.mkdir(parents=True, exist_ok=True)
        self.borg_dir.mkdir(parents=True, exist_ok=True)
        self.restic_dir.mkdir(parents=True, exist_ok=True)
        block_size = self.block_size
        borg_version = self.run(["borg", "--version"]).strip()
        restic_version = self.run(["restic", "version"]).strip()
        print(
            f"== {self.rounds} rounds on {self.image.name} ({self.size / MIB:.1f} MiB); page cache"
            f" {'dropped before every timed step' if self.caches_dropped else 'NOT dropped'}"
        )
        idle = self.idle_cpu(5.0)
        # One untimed round of each tool first: the mesh is a long-running service, and
        # a fresh broker JVM spends its first seconds compiling; the peers get the same.
        self.ours(0)
        self.borg(0)
        shutil.rmtree(self.borg_dir / "repo0")
        self.restic(0)
        shutil.rmtree(self.restic_dir / "repo0")
        print("   warm-up round of the three tools done (not counted)", flush=True)
        rounds = []
        for n in range(1, self.rounds + 1):
            ours = self.ours(n)
            print(
                f"   round {n}: ours backup {ours['backup']['seconds']:.2f} s,"
                f" restore {ours['restore']['seconds']:.2f} s (byte-identical)",
                flush=True,
            )
            borg = self.borg(n)
            print(
                f"   round {n}: borg create {borg['create']['seconds']:.2f} s,"
                f" extract {borg['extract']['seconds']:.2f} s (byte-identical)",
                flush=True,
            )
            restic = self.restic(n)
            floor = self.floor()
            print(
                f"   round {n}: restic backup {restic['backup']['seconds']:.2f} s,"
                f" restore {restic['restore']['seconds']:.2f} s (byte-identical);"
                f" floor {floor['floor']['seconds']:.2f} s",
                flush=True,
            )
            ours |= self.incrementals(n, ours["restore_point"])
            borg["create_incremental"] = self.borg_incremental(n)
            restic["backup_incremental"] = self.restic_incremental(n)
            verified = ours["incremental"]["restores_verified_seconds"]
            print(
                f"   round {n}: incrementals of the changed copy: ours with a map"
                f" {ours['incremental_ranges']['seconds']:.2f} s, by digest compare"
                f" {ours['incremental_digest']['seconds']:.2f} s, no change"
                f" {ours['incremental_nochange']['seconds']:.2f} s; borg create"
                f" {borg['create_incremental']['seconds']:.2f} s, restic backup"
                f" {restic['backup_incremental']['seconds']:.2f} s"
                + ("; both of ours restored byte-identical" if verified else ""),
                flush=True,
            )
            rounds.append(
                {"round": n, "ours": ours, "borg": borg, "restic": restic, "floor": floor}
            )
        nonzero = self.size - zero_bytes(self.image, block_size)
        return {
            "image": {
                "path": self.image.name,
                "bytes": self.size,
                "allocated_bytes": self.image.stat().st_blocks * 512,
                "nonzero_bytes": nonzero,
            },
            "mesh": mesh,
            "kafka": os.environ.get("BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS", ""),
            "kafka_security": os.environ.get("BLOCKFERRY_KAFKA__SECURITY__PROTOCOL", "PLAINTEXT"),
            "bulk_client": os.environ.get("BLOCKFERRY_KAFKA__BULK_CLIENT", "librdkafka"),
            "encryption": os.environ.get("BENCH_REPO_ENCRYPTION", "aes-256-gcm"),
            "block_size": block_size,
            "compression": f"{COMPRESSION} (zstd level 3)",
            "borg": {"version": borg_version, "encryption": BORG_ENCRYPTION, "create": BORG_CREATE},
            "restic": {"version": restic_version, "backup": RESTIC_BACKUP},
            "page_cache_dropped": self.caches_dropped,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "idle_cpu_per_second": idle,
            "processes": [*self.pids, "client", "other"],
            "peak_rss_mib": {name: peak_rss_mib(pid) for name, pid in self.pids.items()},
            "rounds": rounds,
        }


def summarise(doc: dict[str, Any]) -> None:
    """Add medians and ratios to ``doc`` and print the tables."""
    size: int = doc["image"]["bytes"]
    mib = size / MIB
    rounds = doc["rounds"]

    def rate(seconds: float) -> float:
        return mib / seconds

    per_round = []
    for r in rounds:
        o, b, t = r["ours"], r["borg"], r["restic"]
        floor = r["floor"]["floor"]
        per_round.append(
            {
                "round": r["round"],
                "ours_backup_s": o["backup"]["seconds"],
                "borg_create_s": b["create"]["seconds"],
                "ours_restore_s": o["restore"]["seconds"],
                "borg_extract_s": b["extract"]["seconds"],
                "backup_ratio": o["backup"]["seconds"] / b["create"]["seconds"],
                "restore_ratio": o["restore"]["seconds"] / b["extract"]["seconds"],
                "restic_backup_s": t["backup"]["seconds"],
                "restic_restore_s": t["restore"]["seconds"],
                "restic_backup_ratio": o["backup"]["seconds"] / t["backup"]["seconds"],
                "restic_restore_ratio": o["restore"]["seconds"] / t["restore"]["seconds"],
                "floor_s": floor["seconds"],
                "floor_inside_s": floor["inside"]["seconds"],
                "floor_ratio": o["backup"]["seconds"] / floor["seconds"],
            }
        )
    med = {k: statistics.median(p[k] for p in per_round) for k in per_round[0] if k != "round"}
    c = rounds[0]["ours"]["counters"]
    nonzero = doc["image"]["nonzero_bytes"]
    ours_repo = statistics.median(r["ours"]["repository_bytes"] for r in rounds)
    borg_repo = statistics.median(r["borg"]["repository_bytes"] for r in rounds)
    restic_repo = statistics.median(r["restic"]["repository_bytes"] for r in rounds)
    summary = {
        "ours_backup_mib_s": rate(med["ours_backup_s"]),
        "ours_restore_mib_s": rate(med["ours_restore_s"]),
        "borg_create_mib_s": rate(med["borg_create_s"]),
        "borg_extract_mib_s": rate(med["borg_extract_s"]),
        "median_seconds": {k: v for k, v in med.items() if k.endswith("_s")},
        "median_backup_ratio": med["backup_ratio"],
        "median_restore_ratio": med["restore_ratio"],
        "restic_backup_mib_s": rate(med["restic_backup_s"]),
        "restic_restore_mib_s": rate(med["restic_restore_s"]),
        "floor_mib_s": rate(med["floor_s"]),
        "target_met": {
            "backup": med["backup_ratio"] <= TARGETS["backup"],
            "restore": med["restore_ratio"] <= TARGETS["restore"],
        },
        "reduction_nonzero_read_over_sent": nonzero / c["bytes_sent"],
        "compression_sent_plain_over_sent": c["bytes_sent_plain"] / c["bytes_sent"],
        "ours_repository_bytes": ours_repo,
        "borg_repository_bytes": borg_repo,
        "restic_repository_bytes": restic_repo,
        "per_round": per_round,
    }
    doc["summary"] = summary

    def cell(seconds: float) -> str:
        return f"{seconds:7.2f} s {rate(seconds):6.1f}"

    def times_row(label: object, p: dict[str, float]) -> str:
        return (
            f"  {label!s:<7}{cell(p['ours_backup_s']):>17}{cell(p['borg_create_s']):>17}"
            f"{p['backup_ratio']:7.2f}{cell(p['ours_restore_s']):>18}"
            f"{cell(p['borg_extract_s']):>17}{p['restore_ratio']:7.2f}"
        )

    def peers_row(label: object, p: dict[str, float]) -> str:
        return (
            f"  {label!s:<7}{cell(p['restic_backup_s']):>17}{p['restic_backup_ratio']:7.2f}"
            f"{cell(p['restic_restore_s']):>18}{p['restic_restore_ratio']:7.2f}"
            f"{cell(p['floor_s']):>17}{p['floor_inside_s']:8.2f}{p['floor_ratio']:7.2f}"
        )

    def pair(label: str, ours: str, borg: str, restic: str = "", note: str = "") -> str:
        return f"  {label:<38}{ours:>14}{borg:>14}{restic:>14}{note}"

    session = {
        step: statistics.median(r["ours"]["session_seconds"][step] for r in rounds)
        for step in ("backup", "restore")
    }
    summary["median_session_seconds"] = session
    bs_kib = doc["block_size"] // 1024
    verdict = {True: "met", False: "NOT met"}
    met = summary["target_met"]
    dropped = "dropped before every timed step of both tools (sync; echo 3 > drop_caches)"
    lines = [
        "=" * 108,
        f"blockferry bench: image {mib:.1f} MiB ({size} bytes;"
        f" {doc['image']['allocated_bytes'] / MIB:.0f} MiB allocated,"
        f" {nonzero / MIB:.0f} MiB in non-zero {bs_kib} KiB blocks)",
        f"  mesh        {doc['mesh']}; Kafka {doc['kafka']} ({doc['kafka_security']});"
        f" bulk records through {doc['bulk_client']}",
        f"  ours        full backup into a fresh repository per round, block size {bs_kib} KiB,"
        f" compression {doc['compression']}, encryption {doc.get('encryption', 'none')};"
        " restore through the mesh",
        f"  borg        {doc['borg']['version']}, init -e {doc['borg']['encryption']},"
        f" create {' '.join(doc['borg']['create'])}, fresh repository per round; extract",
        f"  restic      {doc['restic']['version']}, repository version 2, backup"
        f" {' '.join(doc['restic']['backup'])} (always encrypted), fresh repository per round;"
        " restore",
        "  floor       floor.py: our source mover's reading, zero test, digest, compression and"
        " checksum of the image, same threads and windows, no Kafka, no repository",
        "  page cache  "
        + (dropped if doc["page_cache_dropped"] else "NOT dropped (not allowed here)"),
        "  times       wall clock of each CLI call (ours: backup --wait, restore until done);"
        " MiB/s = image size / time",
        "-" * 108,
        f"  {'round':<7}{'ours backup':>17}{'borg create':>17}{'ratio':>7}"
        f"{'ours restore':>18}{'borg extract':>17}{'ratio':>7}",
        f"  {'':<7}{'s  MiB/s':>17}{'s  MiB/s':>17}{'':>7}{'s  MiB/s':>18}{'s  MiB/s':>17}",
        *(times_row(p["round"], p) for p in per_round),
        times_row("median", med),
        "  ratio = our time / borg's time in that round; every restore was byte-identical (cmp)",
        f"  {'round':<7}{'restic backup':>17}{'ratio':>7}{'restic restore':>18}{'ratio':>7}"
        f"{'floor':>17}{'inside':>8}{'ours/':>7}",
        f"  {'':<7}{'s  MiB/s':>17}{'':>7}{'s  MiB/s':>18}{'':>7}{'s  MiB/s':>17}{'s':>8}"
        f"{'floor':>7}",
        *(peers_row(p["round"], p) for p in per_round),
        peers_row("median", med),
        "  ratio = our time / restic's; floor = wall time of floor.py (inside: without the"
        " interpreter's start-up); ours/floor = our backup time / the floor's",
        "-" * 108,
        pair("", "ours", "borg", "restic"),
        pair(
            "backup MiB/s (median)",
            f"{summary['ours_backup_mib_s']:.1f}",
            f"{summary['borg_create_mib_s']:.1f}",
            f"{summary['restic_backup_mib_s']:.1f}",
        ),
        pair(
            "restore MiB/s (median)",
            f"{summary['ours_restore_mib_s']:.1f}",
            f"{summary['borg_extract_mib_s']:.1f}",
            f"{summary['restic_restore_mib_s']:.1f}",
        ),
        pair(
            "repository on disk, MiB (% of image)",
            f"{ours_repo / MIB:.1f} ({100 * ours_repo / size:.0f}%)",
            f"{borg_repo / MIB:.1f} ({100 * borg_repo / size:.0f}%)",
            f"{restic_repo / MIB:.1f} ({100 * restic_repo / size:.0f}%)",
        ),
        pair(
            "non-zero bytes read / bytes sent",
            f"{summary['reduction_nonzero_read_over_sent']:.2f}",
            "",
            "",
            f"   {nonzero / MIB:.0f} MiB / {c['bytes_sent'] / MIB:.0f} MiB (dedupe + compression)",
        ),
        pair(
            "plain / sent bytes of sent blocks",
            f"{summary['compression_sent_plain_over_sent']:.2f}",
            "",
            "",
            f"   compression alone; of {c['blocks_total']} blocks {c['blocks_sent']} sent,"
            f" {c['blocks_zero']} zero,"
            f" {c['blocks_deduplicated_session'] + c['blocks_deduplicated_global']} deduplicated",
        ),
        f"  {'server-side session seconds (median)':<38}backup {session['backup']:.2f} s,"
        f" restore {session['restore']:.2f} s (the CLI adds start-up, following)",
        f"  median ours/borg time ratio: backup {med['backup_ratio']:.2f}"
        f" (target <= {TARGETS['backup']} {verdict[met['backup']]}), restore"
        f" {med['restore_ratio']:.2f} (target <= {TARGETS['restore']} {verdict[met['restore']]});"
        f" ours/restic: backup {med['restic_backup_ratio']:.2f}, restore"
        f" {med['restic_restore_ratio']:.2f}; ours/floor {med['floor_ratio']:.2f}",
        *incremental_lines(doc, rate, verdict),
        "-" * 108,
        "  CPU seconds per process during each step (median of rounds; client = the CLI or borg,",
        "  other = the rest of the machine's busy CPU time; the machine has"
        f" {doc['machine']['cpus']} CPUs):",
    ]
    names = doc["processes"]
    lines.append(f"  {'step':<18}{'wall s':>7}" + "".join(f"{n:>14}" for n in names) + "     sum")
    for tool, step, label in TIMED_STEPS:
        wall = statistics.median(r[tool][step]["seconds"] for r in rounds)
        cpu = [statistics.median(r[tool][step]["cpu"][n] for r in rounds) for n in names]
        lines.append(
            f"  {label:<18}{wall:>7.2f}" + "".join(f"{v:>14.2f}" for v in cpu) + f"{sum(cpu):>8.2f}"
        )
    idle = [doc["idle_cpu_per_second"].get(n, 0.0) for n in names]
    lines.append(
        f"  {'idle, per second':<18}{1.0:>7.2f}"
        + "".join(f"{v:>14.2f}" for v in idle)
        + f"{sum(idle):>8.2f}"
    )
    gib = size / (1024 * MIB)
    per_gib = summary["cpu_seconds_per_gib"] = {
        step: {n: statistics.median(r["ours"][step]["cpu"][n] for r in rounds) / gib for n in names}
        for step in ("backup", "restore")
    }
    for step, cpu in per_gib.items():
        lines.append(
            f"  {'CPU s/GiB ' + step:<25}"
            + "".join(f"{cpu[n]:>14.2f}" for n in names)
            + f"{sum(cpu.values()):>8.2f}"
        )
    peak = doc["peak_rss_mib"]
    lines.append(f"  {'peak RSS, MiB':<25}" + "".join(f"{peak.get(n, 0):>14.0f}" for n in names))
    busy = {
        f"{tool} {step} round {r['round']}": (
            r[tool][step]["cpu"]["other"] / r[tool][step]["seconds"]
        )
        for r in rounds
        for tool, step, _ in TIMED_STEPS
    }
    summary["other_cpus_busy"] = busy
    worst = max(busy, key=lambda k: busy[k])
    if busy[worst] > 0.25:
        lines.append(
            f"  WARNING: other processes kept {busy[worst]:.2f} CPUs busy during {worst}"
            f" ({sum(v > 0.25 for v in busy.values())} of {len(busy)} timed steps above 0.25):"
        )
        lines.append("  the figures are disturbed; run the bench again on a quiet machine")
    lines.append("=" * 108)
    print("\n" + "\n".join(lines))


def incremental_lines(doc: dict[str, Any], rate: Any, verdict: dict[bool, str]) -> list[str]:
    """Add the incremental figures to ``doc["summary"]``; their lines of the report."""
    rounds = doc["rounds"]
    size: int = doc["image"]["bytes"]
    per_round = []
    for r in rounds:
        o, b, inc = r["ours"], r["borg"], r["ours"]["incremental"]
        borg_s = b["create_incremental"]["seconds"]
        restic_s = r["restic"]["backup_incremental"]["seconds"]
        per_round.append(
            {
                "round": r["round"],
                "ours_ranges_s": o["incremental_ranges"]["seconds"],
                "ours_digest_s": o["incremental_digest"]["seconds"],
                "borg_create_s": borg_s,
                "ranges_ratio": o["incremental_ranges"]["seconds"] / borg_s,
                "digest_ratio": o["incremental_digest"]["seconds"] / borg_s,
                "restic_s": restic_s,
                "restic_ranges_ratio": o["incremental_ranges"]["seconds"] / restic_s,
                "restic_digest_ratio": o["incremental_digest"]["seconds"] / restic_s,
                "nochange_s": o["incremental_nochange"]["seconds"],
                "nochange_session_s": inc["sessions"]["nochange"]["seconds"],
                "growth_bytes": inc["repository_growth_bytes"],
                "compressed_bytes": inc["blocks_changed_compressed_bytes"],
                "sent_bytes": inc["sessions"]["ranges"]["counters"]["bytes_sent"],
                "growth_ratio": inc["repository_growth_bytes"]
                / inc["blocks_changed_compressed_bytes"],
                "borg_growth_bytes": b["create_incremental"]["repository_growth_bytes"],
                "restic_growth_bytes": r["restic"]["backup_incremental"]["repository_growth_bytes"],
            }
        )
    med = {k: statistics.median(p[k] for p in per_round) for k in per_round[0] if k != "round"}
    met = {
        "ranges": med["ranges_ratio"] <= TARGETS["ranges"],
        "digest": med["digest_ratio"] <= TARGETS["digest"],
        "nochange": med["nochange_s"] < TARGETS["nochange_s"],
        "growth": med["growth_ratio"] <= TARGETS["growth"],
    }
    first = rounds[0]["ours"]["incremental"]
    doc["summary"]["incremental"] = {
        "median": med,
        "ours_ranges_mib_s": rate(med["ours_ranges_s"]),
        "ours_digest_mib_s": rate(med["ours_digest_s"]),
        "borg_create_mib_s": rate(med["borg_create_s"]),
        "target_met": met,
        "per_round": per_round,
    }

    def cell(seconds: float) -> str:
        return f"{seconds:7.2f} s {rate(seconds):6.1f}"

    def row(label: object, p: dict[str, float]) -> str:
        return (
            f"  {label!s:<7}{cell(p['ours_ranges_s']):>17}{cell(p['ours_digest_s']):>17}"
            f"{cell(p['borg_create_s']):>17}{p['ranges_ratio']:7.2f}{p['digest_ratio']:7.2f}"
            f"{p['nochange_s']:9.2f}{p['nochange_session_s']:9.3f}"
        )

    counters = first["sessions"]["ranges"]["counters"]
    dc = first["sessions"]["digest"]["counters"]
    verified = [f"{rounds[0]['round']}"] if first["restores_verified_seconds"] else []
    return [
        "-" * 108,
        f"  incrementals: per round a copy of the image with {first['blocks_changed']} of"
        f" {-(-size // doc['block_size'])} blocks changed ({first['bytes_changed'] / MIB:.1f} MiB"
        f" in {first['ranges']} ranges: one contiguous run of {100 * CHANGED_RUN:.0f}% of the"
        f" image, one 4 KiB write in {100 * CHANGED_SCATTERED:.0f}% of the blocks)",
        "  (a) ours with a changed-ranges map {since, ranges}; (b) ours by digest compare (its"
        " own job and repository, parent a full of the same image); (c) ours again right after"
        " (a) with an empty map; (d) borg create of the copy into the round's borg repository;"
        " (e) restic backup of the copy into the round's restic repository",
        f"  {'round':<7}{'(a) ours map':>17}{'(b) ours digest':>17}{'(d) borg create':>17}"
        f"{'a/d':>7}{'b/d':>7}{'(c) wall':>9}{'session':>9}",
        f"  {'':<7}{'s  MiB/s':>17}{'s  MiB/s':>17}{'s  MiB/s':>17}{'':>14}{'s':>9}{'s':>9}",
        *(row(p["round"], p) for p in per_round),
        row("median", med),
        "  MiB/s = image size / time; a/d, b/d = our time / borg's in that round; (a) and (b)"
        " of round " + (", ".join(verified) or "-") + " restored byte-identical to the copy (cmp)",
        f"  median ratio (a)/(d) {med['ranges_ratio']:.2f} (target <= {TARGETS['ranges']}"
        f" {verdict[met['ranges']]}), (b)/(d) {med['digest_ratio']:.2f} (target <="
        f" {TARGETS['digest']} {verdict[met['digest']]})",
        f"  (e) restic: median {med['restic_s']:.2f} s ({rate(med['restic_s']):.1f} MiB/s);"
        f" (a)/(e) {med['restic_ranges_ratio']:.2f}, (b)/(e) {med['restic_digest_ratio']:.2f}",
        f"  no-change incremental (c): wall {med['nochange_s']:.2f} s (target <"
        f" {TARGETS['nochange_s']} s {verdict[met['nochange']]}), server-side session"
        f" {med['nochange_session_s']:.3f} s",
        f"  repository growth of (a): {med['growth_bytes'] / MIB:.2f} MiB; the changed blocks'"
        f" zstd-3 compressed size {med['compressed_bytes'] / MIB:.2f} MiB; bytes_sent"
        f" {med['sent_bytes'] / MIB:.2f} MiB; growth / compressed {med['growth_ratio']:.3f}"
        f" (target <= {TARGETS['growth']} {verdict[met['growth']]}); borg's growth"
        f" {med['borg_growth_bytes'] / MIB:.2f} MiB, restic's"
        f" {med['restic_growth_bytes'] / MIB:.2f} MiB",
        f"  round {rounds[0]['round']} counters: (a) blocks_read {counters.get('blocks_read')},"
        f" blocks_sent {counters.get('blocks_sent')}, blocks_skipped"
        f" {counters.get('blocks_skipped')}; (b) blocks_read {dc.get('blocks_read')},"
        f" blocks_sent {dc.get('blocks_sent')}, blocks_unchanged {dc.get('blocks_unchanged')}",
    ]


def compare(doc: dict[str, Any], earlier_file: Path) -> None:
    """Print this run's median times relative to an earlier run's (its bench.json)."""
    earlier = json.loads(earlier_file.read_text())
    print(
        f"\n  against {earlier_file} (Kafka {earlier.get('kafka_security', 'PLAINTEXT')},"
        f" bulk records through {earlier.get('bulk_client', 'aiokafka')},"
        f" encryption {earlier.get('encryption', 'none')},"
        f" {earlier['image']['bytes'] // MIB} MiB image, {len(earlier['rounds'])} rounds):"
    )
    for step in ("backup", "restore"):
        now = statistics.median(r["ours"][step]["seconds"] for r in doc["rounds"])
        then = statistics.median(r["ours"][step]["seconds"] for r in earlier["rounds"])
        print(f"  {step:<8} {now:8.2f} s against {then:8.2f} s: {100 * (now / then - 1):+.1f}%")
        if "cpu_seconds_per_gib" in earlier.get("summary", {}):
            cpu_now = sum(doc["summary"]["cpu_seconds_per_gib"][step].values())
            cpu_then = sum(earlier["summary"]["cpu_seconds_per_gib"][step].values())
            print(
                f"  {'':<8} CPU {cpu_now:6.2f} s/GiB against {cpu_then:6.2f} s/GiB:"
                f" {100 * (cpu_now / cpu_then - 1):+.1f}%"
            )
    if "cpu_seconds_per_gib" not in earlier.get("summary", {}):
        return
    now_client = f"{doc['bulk_client']}/{doc.get('encryption', 'none')}"
    then_client = f"{earlier.get('bulk_client', 'aiokafka')}/{earlier.get('encryption', 'none')}"
    names = [n for n in doc["processes"] if n in earlier["processes"]]
    print(
        f"  per process, {now_client} | {then_client}"
        " (the broker's peak RSS counts every pass so far on the same broker):"
    )
    print(f"  {'':<21}" + "".join(f"{n:>19}" for n in names))
    rows = [
        (
            f"CPU s/GiB {step}",
            doc["summary"]["cpu_seconds_per_gib"][step],
            earlier["summary"]["cpu_seconds_per_gib"][step],
            ".2f",
        )
        for step in ("backup", "restore")
    ]
    rows.append(("peak RSS, MiB", doc["peak_rss_mib"], earlier["peak_rss_mib"], ".0f"))
    for label, now_values, then_values, spec in rows:
        cells = (
            f"{format(now_values.get(n, 0.0), spec)} | {format(then_values.get(n, 0.0), spec)}"
            for n in names
        )
        print(f"  {label:<21}" + "".join(f"{c:>19}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mesh", required=True, help="How the roles run, for the report.")
    parser.add_argument(
        "--pid",
        action="append",
        default=[],
        type=lambda s: (s.split("=", 1)[0], int(s.split("=", 1)[1])),
        help="NAME=PID of a process whose CPU time to account (a role, a Kafka node).",
    )
    args = parser.parse_args()
    bench = Bench(args)
    try:
        doc = bench.main(args.mesh)
    except BenchError as exc:
        print(f"\nbench FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nbench interrupted", file=sys.stderr)
        sys.exit(130)
    summarise(doc)
    if os.environ.get("BENCH_COMPARE"):
        compare(doc, Path(os.environ["BENCH_COMPARE"]))
    out = bench.work / "bench.json"
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"figures written to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
