#!/usr/bin/env python3
"""The rounds of `make bench` (run by bench.sh once Kafka and the roles are up): per
round a full backup into a fresh repository (rN) and a restore through the mesh, then
borg create and extract of the same image into a fresh borg repository. Every restore
is compared byte for byte with the image; a difference fails the bench. Prints per-round
figures and medians and writes them to WORK/bench.json.

    bench.py --work DIR --image PATH --rounds N --mesh TEXT [--pid NAME=PID ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
BIN = Path(sys.executable).parent
BORG_CREATE = ["--chunker-params", "fixed,4194304", "--compression", "zstd,3"]
BORG_ENCRYPTION = "authenticated-blake2"
COMPRESSION = "optimal"
TIMED_STEPS = (("ours", "backup"), ("ours", "restore"), ("borg", "create"), ("borg", "extract"))


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
        self.borg_dir = self.work / "borg"
        self.repos = {
            name: Path(path)
            for name, path in json.loads(
                os.environ["BLOCKFERRY_TARGET_MOVER__REPOSITORIES"]
            ).items()
        }
        self.caches_dropped = drop_caches()
        self.borg_env = os.environ | {
            "BORG_PASSPHRASE": "bench",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_BASE_DIR": str(self.borg_dir / "home"),
            "BORG_DISPLAY_PASSPHRASE": "no",
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

    def compare(self, restored: Path, what: str) -> None:
        done = subprocess.run(["cmp", str(self.image), str(restored)], capture_output=True)
        if done.returncode != 0:
            message = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise BenchError(
                f"!!! {what} RESTORED WRONG BYTES: {restored} differs from {self.image}: {message}"
            )

    # -- one round of each tool --------------------------------------------------------

    def ours(self, n: int) -> dict[str, Any]:
        repo = f"r{n}"
        backup = self.timed(
            [
                str(BIN / "blockferry"),
                "backup",
                str(self.image),
                "--repo",
                repo,
                "--job",
                f"bench{n}",
                "--disk",
                "disk0",
                "--compression",
                COMPRESSION,
                "--wait",
                "--json",
            ]
        )
        session = json.loads(backup.pop("stdout"))
        if session["state"] != "success":
            raise BenchError(f"our backup {n} failed: {session}")
        dest = self.restore_dir / f"ours-{n}.img"
        restore = self.timed(
            [
                str(BIN / "blockferry"),
                "restore",
                session["restore_point"],
                "--repo",
                repo,
                "--to",
                str(dest),
                "--json",
            ]
        )
        restored = json.loads(restore.pop("stdout"))
        if restored["state"] != "success":
            raise BenchError(f"our restore {n} failed: {restored}")
        self.compare(dest, f"OUR RESTORE (round {n})")
        dest.unlink()
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

    def borg(self, n: int) -> dict[str, Any]:
        repo = self.borg_dir / f"repo{n}"
        extract_to = self.restore_dir / f"borg-{n}"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(extract_to, ignore_errors=True)
        extract_to.mkdir(parents=True)
        self.run(["borg", "init", "-e", BORG_ENCRYPTION, str(repo)], env=self.borg_env)
        create = self.timed(
            ["borg", "create", *BORG_CREATE, f"{repo}::a", self.image.name],
            cwd=self.image.parent,
            env=self.borg_env,
        )
        create.pop("stdout")
        extract = self.timed(["borg", "extract", f"{repo}::a"], cwd=extract_to, env=self.borg_env)
        extract.pop("stdout")
        self.compare(extract_to / self.image.name, f"BORG EXTRACT (round {n})")
        apparent, allocated = tree_bytes(repo)
        shutil.rmtree(extract_to)
        shutil.rmtree(repo)
        return {
            "create": create,
            "extract": extract,
            "repository_bytes": allocated,
            "repository_apparent_bytes": apparent,
        }

    # -- the whole bench ---------------------------------------------------------------

    def main(self, mesh: str) -> dict[str, Any]:
        self.restore_dir.mkdir(parents=True, exist_ok=True)
        self.borg_dir.mkdir(parents=True, exist_ok=True)
        block_size = json.loads((next(iter(self.repos.values())) / "config.json").read_text())[
            "block_size"
        ]
        borg_version = self.run(["borg", "--version"]).strip()
        print(
            f"== {self.rounds} rounds on {self.image.name} ({self.size / MIB:.1f} MiB); page cache"
            f" {'dropped before every timed step' if self.caches_dropped else 'NOT dropped'}"
        )
        idle = self.idle_cpu(5.0)
        # One untimed round of each tool first: the mesh is a long-running service, and
        # a fresh broker JVM spends its first seconds compiling; borg gets the same warm-up.
        self.ours(0)
        self.borg(0)
        print("   warm-up round of both tools done (not counted)", flush=True)
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
            rounds.append({"round": n, "ours": ours, "borg": borg})
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
            "block_size": block_size,
            "compression": f"{COMPRESSION} (zstd level 3)",
            "borg": {"version": borg_version, "encryption": BORG_ENCRYPTION, "create": BORG_CREATE},
            "page_cache_dropped": self.caches_dropped,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "idle_cpu_per_second": idle,
            "processes": [*self.pids, "client", "other"],
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
        o, b = r["ours"], r["borg"]
        per_round.append(
            {
                "round": r["round"],
                "ours_backup_s": o["backup"]["seconds"],
                "borg_create_s": b["create"]["seconds"],
                "ours_restore_s": o["restore"]["seconds"],
                "borg_extract_s": b["extract"]["seconds"],
                "backup_ratio": o["backup"]["seconds"] / b["create"]["seconds"],
                "restore_ratio": o["restore"]["seconds"] / b["extract"]["seconds"],
            }
        )
    med = {k: statistics.median(p[k] for p in per_round) for k in per_round[0] if k != "round"}
    c = rounds[0]["ours"]["counters"]
    nonzero = doc["image"]["nonzero_bytes"]
    ours_repo = statistics.median(r["ours"]["repository_bytes"] for r in rounds)
    borg_repo = statistics.median(r["borg"]["repository_bytes"] for r in rounds)
    summary = {
        "ours_backup_mib_s": rate(med["ours_backup_s"]),
        "ours_restore_mib_s": rate(med["ours_restore_s"]),
        "borg_create_mib_s": rate(med["borg_create_s"]),
        "borg_extract_mib_s": rate(med["borg_extract_s"]),
        "median_seconds": {k: v for k, v in med.items() if k.endswith("_s")},
        "median_backup_ratio": med["backup_ratio"],
        "median_restore_ratio": med["restore_ratio"],
        "target_met": {
            "backup": med["backup_ratio"] <= 1.0,
            "restore": med["restore_ratio"] <= 1.0,
        },
        "reduction_nonzero_read_over_sent": nonzero / c["bytes_sent"],
        "compression_sent_plain_over_sent": c["bytes_sent_plain"] / c["bytes_sent"],
        "ours_repository_bytes": ours_repo,
        "borg_repository_bytes": borg_repo,
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

    def pair(label: str, ours: str, borg: str, note: str = "") -> str:
        return f"  {label:<38}{ours:>14}{borg:>14}{note}"

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
        f"  mesh        {doc['mesh']}; Kafka {doc['kafka']}",
        f"  ours        full backup into a fresh repository per round, block size {bs_kib} KiB,"
        f" compression {doc['compression']}; restore through the mesh",
        f"  borg        {doc['borg']['version']}, init -e {doc['borg']['encryption']},"
        f" create {' '.join(doc['borg']['create'])}, fresh repository per round; extract",
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
        "-" * 108,
        pair("", "ours", "borg"),
        pair(
            "backup MiB/s (median)",
            f"{summary['ours_backup_mib_s']:.1f}",
            f"{summary['borg_create_mib_s']:.1f}",
        ),
        pair(
            "restore MiB/s (median)",
            f"{summary['ours_restore_mib_s']:.1f}",
            f"{summary['borg_extract_mib_s']:.1f}",
        ),
        pair(
            "repository on disk, MiB (% of image)",
            f"{ours_repo / MIB:.1f} ({100 * ours_repo / size:.0f}%)",
            f"{borg_repo / MIB:.1f} ({100 * borg_repo / size:.0f}%)",
        ),
        pair(
            "non-zero bytes read / bytes sent",
            f"{summary['reduction_nonzero_read_over_sent']:.2f}",
            "",
            f"   {nonzero / MIB:.0f} MiB / {c['bytes_sent'] / MIB:.0f} MiB (dedupe + compression)",
        ),
        pair(
            "plain / sent bytes of sent blocks",
            f"{summary['compression_sent_plain_over_sent']:.2f}",
            "",
            f"   compression alone; of {c['blocks_total']} blocks {c['blocks_sent']} sent,"
            f" {c['blocks_zero']} zero, {c['blocks_deduplicated_session']} deduplicated",
        ),
        f"  {'server-side session seconds (median)':<38}backup {session['backup']:.2f} s,"
        f" restore {session['restore']:.2f} s (the CLI adds start-up, following)",
        f"  median ours/borg time ratio: backup {med['backup_ratio']:.2f}"
        f" (target <= 1.0 {verdict[met['backup']]}), restore {med['restore_ratio']:.2f}"
        f" (target <= 1.0 {verdict[met['restore']]})",
        "-" * 108,
        "  CPU seconds per process during each step (median of rounds; client = the CLI or borg,",
        "  other = the rest of the machine's busy CPU time; the machine has"
        f" {doc['machine']['cpus']} CPUs):",
    ]
    names = doc["processes"]
    lines.append(f"  {'step':<17}{'wall s':>7}" + "".join(f"{n:>14}" for n in names) + "     sum")
    for tool, step in TIMED_STEPS:
        label = f"{tool} {step}"
        wall = statistics.median(r[tool][step]["seconds"] for r in rounds)
        cpu = [statistics.median(r[tool][step]["cpu"][n] for r in rounds) for n in names]
        lines.append(
            f"  {label:<17}{wall:>7.2f}" + "".join(f"{v:>14.2f}" for v in cpu) + f"{sum(cpu):>8.2f}"
        )
    idle = [doc["idle_cpu_per_second"].get(n, 0.0) for n in names]
    lines.append(
        f"  {'idle, per second':<17}{1.0:>7.2f}"
        + "".join(f"{v:>14.2f}" for v in idle)
        + f"{sum(idle):>8.2f}"
    )
    busy = {
        f"{tool} {step} round {r['round']}": (
            r[tool][step]["cpu"]["other"] / r[tool][step]["seconds"]
        )
        for r in rounds
        for tool, step in TIMED_STEPS
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
    out = bench.work / "bench.json"
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"figures written to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
