#!/usr/bin/env python3
"""The steps of `make bench-memory` (run by bench_memory.sh once Kafka and the roles are
up), and the seeding of its big repository's pack index.

    bench_memory.py seed-index REPO CHUNKS
    bench_memory.py load-index REPO [--from-files]
    bench_memory.py disks --work DIR --sizes GIB... --restore 0|1 --pid NAME=PID...
    bench_memory.py big --work DIR --chunks N --pid NAME=PID...
    bench_memory.py summary --work DIR

Every step starts with each process's peak resident memory (VmHWM) reset to what it
holds now (``/proc/PID/clear_refs``), so the peak printed for a step is that step's.
The disks are nbdkit pattern exports: every 8-byte word holds its own offset, so the
content of any block is known without reading the export again.
"""

from __future__ import annotations

import argparse
import array
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import BenchError, cpu_seconds, drop_caches, peak_rss_mib, tree_bytes

from blockferry.repository import Repository, layout
from blockferry.repository.ids import new_pack_id
from blockferry.repository.keys import Secret
from blockferry.repository.pack import PackEntry
from blockferry.repository.pack_index import encode_index_file

GIB = 1024**3
MIB = 1024**2
BIN = Path(sys.executable).parent
ENTRIES_PER_PACK = 256
"""Entries per seeded index file: a 32 MiB pack of 256 KiB blocks compressed 2:1."""
RESTORE_SAMPLES = 256
"""Blocks of each restored disk compared with the pattern (all of them pass the
restore's own digest check before they are written)."""


# -- the big repository's pack index ---------------------------------------------------


def open_repository(repo: Path) -> Repository:
    """A bench repository, opened with the key file its init made
    (``<work>/repository-keys/<name>.key``, where the target mover finds it too)."""
    key_file = repo.parent.parent / "repository-keys" / f"{repo.name}.key"
    return Repository.open(repo, secret=Secret.key_file(key_file))


def seed_index(repo: Path, chunks: int) -> None:
    """Write index files holding ``chunks`` entries of random digests. Their packs do not
    exist: this repository serves only to load a pack index of that size (a check of it
    would report every pack missing)."""
    storage = open_repository(repo).storage
    rng = random.Random(5)
    started = time.perf_counter()
    written = 0
    while written < chunks:
        count = min(ENTRIES_PER_PACK, chunks - written)
        pack_id = new_pack_id()
        entries = []
        offset = 0
        for _ in range(count):
            entries.append(PackEntry(rng.randbytes(32), pack_id, offset, 524288, 1048576, True))
            offset += 524288 + 64
        storage.put(layout.index_file(pack_id), encode_index_file(pack_id, entries))
        written += count
    files = -(-chunks // ENTRIES_PER_PACK)
    print(
        f"   {chunks} entries in {files} index files, {time.perf_counter() - started:.0f} s",
        flush=True,
    )


# -- the pattern disks -----------------------------------------------------------------


def pattern(offset: int, length: int) -> bytes:
    """nbdkit pattern plugin's bytes at ``offset``: each 8-byte word is its own offset,
    big-endian."""
    first = offset - offset % 8
    words = array.array("Q", range(first, offset + length + 8, 8))
    if sys.byteorder == "little":
        words.byteswap()
    start = offset - first
    return words.tobytes()[start : start + length]


@contextmanager
def pattern_disk(work: Path, gib: int) -> Iterator[str]:
    """A ``gib`` GiB read-only pattern export of nbdkit on a unix socket; its NBD URI."""
    sock = work / f"pattern-{gib}g.sock"
    sock.unlink(missing_ok=True)
    process = subprocess.Popen(
        ["nbdkit", "--foreground", "--readonly", "--unix", str(sock), "pattern", f"size={gib}G"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise BenchError(f"nbdkit did not start: {error}")
            if time.monotonic() > deadline:
                raise BenchError("nbdkit did not create its socket in 30 s")
            time.sleep(0.05)
        yield f"nbd+unix:///?socket={sock}"
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- the steps -------------------------------------------------------------------------


class MemoryBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.work: Path = args.work.resolve()
        self.pids: dict[str, int] = dict(args.pid)
        self.caches_dropped = drop_caches()

    def reset_peaks(self) -> None:
        for name, pid in self.pids.items():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5\n")
            except OSError as exc:
                raise BenchError(f"resetting the peak memory of {name} (pid {pid}): {exc}") from exc

    def rss_mib(self) -> dict[str, float]:
        """What each process holds now (VmRSS), in MiB."""
        now = {}
        for name, pid in self.pids.items():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    now[name] = int(line.split()[1]) / 1024
        return now

    def step(self, what: str, cmd: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one CLI step (JSON out): its seconds, CPU and peak memory per process."""
        if self.caches_dropped:
            drop_caches()
        self.reset_peaks()
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(
                f"{what}: {' '.join(cmd)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        result = json.loads(done.stdout)
        if result.get("state") != "success":
            raise BenchError(f"{what} failed: {result}")
        figures = {
            "seconds": seconds,
            "cpu": {name: cpu_seconds(pid) - before[name] for name, pid in self.pids.items()},
            "peak_rss_mib": {name: peak_rss_mib(pid) for name, pid in self.pids.items()},
        }
        return figures, result

    def backup(self, what: str, source: str, repo: str, job: str, *extra: str) -> Any:
        cli = [str(BIN / "blockferry"), "backup", source, "--repo", repo, "--job", job]
        return self.step(what, [*cli, "--disk", "disk0", "--wait", "--json", *extra])

    def restore(self, what: str, restore_point: str, repo: str, dest: Path) -> Any:
        cli = [str(BIN / "blockferry"), "restore", restore_point, "--repo", repo]
        return self.step(what, [*cli, "--to", str(dest), "--json"])

    def disk(self, gib: int, restore: bool) -> dict[str, Any]:
        repo, job = f"g{gib}", f"mem{gib}"
        steps: dict[str, Any] = {}
        with pattern_disk(self.work, gib) as uri:
            steps["full"], full = self.backup("the full backup", uri, repo, job)
            self.report(gib, "full backup", steps["full"])
            steps["digest"], again = self.backup("the digest-compare incremental", uri, repo, job)
            if again["parent"] != full["restore_point"] or again["tracking"] != "digest-compare":
                raise BenchError(f"the digest-compare incremental: {again}")
            self.report(gib, "incr. digest", steps["digest"])
        ranges = self.work / f"empty-{gib}.json"
        ranges.write_text(json.dumps({"since": again["restore_point"], "ranges": []}))
        with pattern_disk(self.work, gib) as uri:
            steps["nochange"], _ = self.backup(
                "the no-change incremental", uri, repo, job, "--changed-ranges", str(ranges)
            )
        self.report(gib, "incr. no-chg", steps["nochange"])
        if restore:
            dest = self.work / "restore" / f"{gib}g.img"
            dest.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(dest.parent).free
            if free < gib * GIB + 4 * GIB:
                print(f"   {gib} GiB: restore skipped, {free // GIB} GiB free", flush=True)
            else:
                steps["restore"], _ = self.restore("the restore", full["restore_point"], repo, dest)
                self.check_restored(dest, gib)
                dest.unlink()
                self.report(gib, "restore", steps["restore"])
        return {
            "gib": gib,
            "steps": steps,
            "repository_bytes": tree_bytes(self.work / "repos" / repo)[1],
        }

    def check_restored(self, dest: Path, gib: int) -> None:
        size = dest.stat().st_size
        if size != gib * GIB:
            raise BenchError(f"the restored {gib} GiB disk has {size} bytes")
        rng = random.Random(gib)
        with open(dest, "rb") as f:
            for _ in range(RESTORE_SAMPLES):
                offset = rng.randrange(0, size - MIB) & ~4095
                f.seek(offset)
                if f.read(MIB) != pattern(offset, MIB):
                    raise BenchError(f"!!! THE RESTORED {gib} GiB DISK DIFFERS AT {offset}")

    def big_repository(self, chunks: int, earlier: dict[str, Any]) -> dict[str, Any]:
        """A 1 GiB full backup into the repository whose index holds ``chunks`` entries
        (the target mover serves only it), against the same backup in the disks' run
        (``earlier``, if it had a 1 GiB disk); and the index loaded alone in a fresh
        process."""
        with pattern_disk(self.work, 1) as uri:
            figures, _ = self.backup("the backup into the big repository", uri, "big", "memb")
        loads = {
            how: json.loads(
                subprocess.run(
                    [sys.executable, __file__, "load-index", str(self.work / "repos" / "big")]
                    + (["--from-files"] if how == "files" else []),
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for how in ("files", "snapshot")
        }
        loaded = figures["index_alone"] = loads["files"]
        figures["index_from_snapshot"] = loads["snapshot"]
        peak = figures["peak_rss_mib"]["target-mover"]
        small = [d["steps"]["full"] for d in earlier.get("disks", []) if d["gib"] == 1]
        against = (
            f" ({peak - small[0]['peak_rss_mib']['target-mover']:+.0f} MiB against the 1 GiB"
            f" disk's full backup into a small repository, {small[0]['seconds']:.1f} s)"
            if small
            else ""
        )
        print(
            f"   repository of {chunks} pack index entries: 1 GiB full backup"
            f" {figures['seconds']:.1f} s; target mover peak {peak:.0f} MiB{against};"
            f" the index alone: {loaded['mib']:.0f} MiB"
            f" ({loaded['mib'] * MIB / chunks:.0f} bytes an entry), loaded from the index"
            f" files in {loaded['seconds']:.1f} s (writing the snapshot included), from the"
            f" snapshot in {loads['snapshot']['seconds']:.1f} s ({loads['snapshot']['mib']:.0f}"
            " MiB)",
            flush=True,
        )
        return {"chunks": chunks, **figures}

    def report(self, gib: int, what: str, figures: dict[str, Any]) -> None:
        peaks = ", ".join(f"{name} {mib:.0f}" for name, mib in figures["peak_rss_mib"].items())
        rate = gib * GIB / MIB / figures["seconds"]
        print(
            f"   {gib:>3} GiB {what:<13} {figures['seconds']:7.1f} s {rate:7.0f} MiB/s;"
            f" peak RSS MiB: {peaks}",
            flush=True,
        )

    def disks(self, sizes: list[int], restore: bool) -> dict[str, Any]:
        print(
            f"== disks {', '.join(f'{g} GiB' for g in sizes)} (nbdkit pattern, non-sparse);"
            f" page cache {'dropped' if self.caches_dropped else 'NOT dropped'} before each step",
            flush=True,
        )
        return {"disks": [self.disk(gib, restore) for gib in sizes], "processes": list(self.pids)}


def load_index(repo: Path, from_files: bool) -> None:
    """Load a repository's pack index in this fresh process (``from_files``: with its
    snapshot removed first, so every index file is decoded and the snapshot written);
    print the resident memory it added and the seconds it took, as JSON."""
    if from_files:
        (repo / layout.INDEX_SNAPSHOT).unlink(missing_ok=True)

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS")

    repository = open_repository(repo)
    before = rss()
    started = time.perf_counter()
    entries = repository.indexed_chunk_count()
    seconds = time.perf_counter() - started
    print(json.dumps({"entries": entries, "seconds": seconds, "mib": (rss() - before) / MIB}))


def summarise(doc: dict[str, Any]) -> None:
    """The peak of each process over each disk's steps, side by side for the sizes."""
    names = doc["processes"]
    print("\n== peak RSS per process (MiB), the most of any step, by disk size")
    print(f"  {'disk':>8}  " + "".join(f"{name:>14}" for name in names))
    for disk in doc["disks"]:
        peaks = {
            name: max(step["peak_rss_mib"][name] for step in disk["steps"].values())
            for name in names
        }
        print(f"  {disk['gib']:>5} GiB  " + "".join(f"{peaks[name]:>14.0f}" for name in names))
    if "big_repository" in doc:
        big = doc["big_repository"]
        print(
            f"  {'big repo':>8}  "
            + "".join(f"{big['peak_rss_mib'][name]:>14.0f}" for name in names)
            + f"   ({big['chunks']} pack index entries, 1 GiB backup)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed-index")
    seed.add_argument("repo", type=Path)
    seed.add_argument("chunks", type=int)
    load = sub.add_parser("load-index")
    load.add_argument("repo", type=Path)
    load.add_argument("--from-files", action="store_true")
    sub.add_parser("summary").add_argument("--work", type=Path, required=True)
    for name in ("disks", "big"):
        phase = sub.add_parser(name)
        phase.add_argument("--work", type=Path, required=True)
        phase.add_argument(
            "--pid",
            action="append",
            default=[],
            type=lambda v: (v.split("=", 1)[0], int(v.split("=", 1)[1])),
        )
        if name == "disks":
            phase.add_argument("--sizes", type=int, nargs="+", required=True)
            phase.add_argument("--restore", type=int, choices=(0, 1), default=1)
        else:
            phase.add_argument("--chunks", type=int, required=True)
    args = parser.parse_args()
    if args.command == "seed-index":
        seed_index(args.repo, args.chunks)
        return
    if args.command == "load-index":
        load_index(args.repo, args.from_files)
        return
    out = args.work / "bench-memory.json"
    if args.command == "summary":
        summarise(json.loads(out.read_text()))
        return
    bench = MemoryBench(args)
    try:
        if args.command == "disks":
            doc = bench.disks(args.sizes, bool(args.restore))
        else:
            doc = json.loads(out.read_text()) if out.exists() else {"disks": []}
            doc["processes"] = list(bench.pids)
            doc["big_repository"] = bench.big_repository(args.chunks, doc)
    except BenchError as exc:
        sys.exit(f"bench-memory: {exc}")
    out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
