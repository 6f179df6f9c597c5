#!/usr/bin/env python3
"""The configurations of `make bench-scale` (run by bench_scale.sh once Kafka and the
roles are up): per MxN one job of N disks backed up in full by M source movers into a
fresh repository, timed from a cold page cache, with CPU-seconds per GiB per process;
then the prediction for more cores. An untimed warm-up job comes first.

    bench_scale.py --work DIR --disk-mib MIB --configs MxN... --pid NAME=PID...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import BenchError, cpu_seconds, drop_caches, machine_busy, peak_rss_mib

MIB = 1024**2
GIB = 1024**3
BIN = Path(sys.executable).parent
MOVER_PORT = 18450
PREDICT_CORES = (16, 64)
REBALANCE_S = 8.0
"""How long a new source mover is given to join the tasks' consumer group."""


def parse_config(text: str) -> tuple[int, int]:
    movers, disks = text.split("x")
    return int(movers), int(disks)


class ScaleBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.work: Path = args.work.resolve()
        self.disk_bytes = args.disk_mib * MIB
        self.configs = [parse_config(c) for c in args.configs]
        self.pids: dict[str, int] = dict(args.pid)
        self.movers: list[subprocess.Popen[bytes]] = []
        self.caches_dropped = drop_caches()

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "blockferry"), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"blockferry {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def apply_jobs(self) -> None:
        disks = sorted((self.work / "disks").glob("disk*.img"))
        jobs = [self.job("warmup", "warmup", 1, disks)]
        jobs += [self.job(f"s{m}x{n}", f"s{m}x{n}", n, disks) for m, n in self.configs]
        path = self.work / "jobs.json"
        path.write_text(json.dumps({"jobs": jobs}))
        self.cli("jobs", "apply", str(path))

    @staticmethod
    def job(name: str, repo: str, n: int, disks: list[Path]) -> dict[str, Any]:
        return {
            "name": name,
            "repository": repo,
            "vms": [
                {
                    "name": "vm",
                    "disks": [{"name": f"d{i}", "source": str(disks[i])} for i in range(n)],
                }
            ],
            "snapshot": {"provider": "none"},
        }

    def use_movers(self, count: int) -> None:
        """Start source movers until ``count`` run (the mesh's own is the first)."""
        if count < 1 + len(self.movers):
            raise BenchError("configurations must come in order of source movers")
        while 1 + len(self.movers) < count:
            m = 2 + len(self.movers)
            port = MOVER_PORT + m
            log = open(self.work / f"source-mover-{m}.log", "wb")
            process = subprocess.Popen(
                [str(BIN / "blockferry"), "run", "source-mover"],
                env=os.environ | {"BLOCKFERRY_HTTP__PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.movers.append(process)
            self.pids[f"source-mover-{m}"] = process.pid
            deadline = time.monotonic() + 120
            while subprocess.run(
                ["curl", "-fsS", f"http://127.0.0.1:{port}/readyz"], capture_output=True
            ).returncode:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"source mover {m} did not start (see its log)")
                time.sleep(0.5)
            time.sleep(REBALANCE_S)

    def stop_movers(self) -> None:
        for process in self.movers:
            process.terminate()
        for process in self.movers:
            process.wait(timeout=60)

    def run_job(self, name: str) -> dict[str, Any]:
        if self.caches_dropped:
            drop_caches()
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        busy_before = machine_busy()
        started = time.perf_counter()
        session = json.loads(self.cli("jobs", "start", name, "--wait", "--json"))
        seconds = time.perf_counter() - started
        if session["state"] != "success":
            raise BenchError(f"job {name} failed: {session}")
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in self.pids.items()}
        busy = machine_busy() - busy_before
        cpu["other"] = max(0.0, busy - sum(cpu.values()))
        return {"seconds": seconds, "cpu": cpu, "busy_cpus": busy / seconds}

    def main(self) -> dict[str, Any]:
        self.apply_jobs()
        self.run_job("warmup")
        print(
            f"== one job of N disks of {self.disk_bytes // MIB} MiB by M source movers;"
            f" page cache {'dropped' if self.caches_dropped else 'NOT dropped'} before each",
            flush=True,
        )
        results = []
        try:
            for m, n in self.configs:
                self.use_movers(m)
                step = self.run_job(f"s{m}x{n}")
                gib = n * self.disk_bytes / GIB
                step |= {"movers": m, "disks": n, "gib": gib}
                per_gib = {name: cpu / gib for name, cpu in step["cpu"].items()}
                step["cpu_per_gib"] = per_gib
                movers = sum(v for k, v in per_gib.items() if k.startswith("source-mover"))
                print(
                    f"   {m} mover(s) x {n} disk(s): {step['seconds']:6.1f} s,"
                    f" {gib * 1024 / step['seconds']:6.0f} MiB/s, {step['busy_cpus']:.2f} CPUs"
                    f" busy; CPU s/GiB: source movers {movers:.2f}, "
                    + ", ".join(
                        f"{k} {v:.2f}"
                        for k, v in per_gib.items()
                        if not k.startswith("source-mover")
                    ),
                    flush=True,
                )
                results.append(step)
            peaks = {name: peak_rss_mib(pid) for name, pid in self.pids.items()}
        finally:
            self.stop_movers()
        return {
            "disk_bytes": self.disk_bytes,
            "cpus": os.cpu_count(),
            "results": results,
            "peak_rss_mib": peaks,
        }


def predict(doc: dict[str, Any]) -> None:
    """Throughput on more cores from the CPU-seconds per GiB of the busiest one-mover
    configuration, and the assumptions that takes."""
    ones = [r for r in doc["results"] if r["movers"] == 1] or doc["results"]
    basis = max(ones, key=lambda r: r["disks"])
    per_gib = {k: v for k, v in basis["cpu_per_gib"].items() if k != "other"}
    total = sum(per_gib.values())
    measured = basis["gib"] * 1024 / basis["seconds"]
    print(
        f"\n== prediction from {basis['movers']} mover x {basis['disks']} disks:"
        f" {total:.2f} CPU-s per GiB over all processes ({measured:.0f} MiB/s measured on"
        f" {doc['cpus']} CPUs, {basis['busy_cpus']:.2f} busy)"
    )
    for cores in PREDICT_CORES:
        print(f"   {cores} cores: {cores / total * 1024:6.0f} MiB/s ({cores / total:.1f} GiB/s)")
    print(
        "   assuming: the work per GiB stays what it is here (CPU-bound, no new"
        " contention), roles spread over the cores with enough instances and partitions"
        " (topic_partitions and shards at least the instances), as many disks in flight"
        " as movers x max_tasks, and source reads, repository writes and the network"
        " keep up (the stored bytes per GiB are written at the same rate)."
    )
    doc["prediction"] = {
        "basis": f"{basis['movers']}x{basis['disks']}",
        "cpu_s_per_gib": per_gib,
        "mib_per_s": {str(c): c / total * 1024 for c in PREDICT_CORES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--disk-mib", type=int, required=True)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument(
        "--pid",
        action="append",
        default=[],
        type=lambda v: (v.split("=", 1)[0], int(v.split("=", 1)[1])),
    )
    args = parser.parse_args()
    try:
        doc = ScaleBench(args).main()
    except BenchError as exc:
        sys.exit(f"bench-scale: {exc}")
    predict(doc)
    (args.work / "bench-scale.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
