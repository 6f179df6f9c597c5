"""``make soak``: the failpoint matrix ``SOAK_RUNS`` times (default 20), each run with
every failpoint in a random order and at a random hit, on a Kafka cluster of its own
(``SOAK_KAFKA_NODES``, default 3: replication 3, min ISR 2). The runs take the
repository's backends in turn (``SOAK_BACKENDS``, default ``local,s3,smb``: a directory
served by the target mover; MinIO and Samba, started here, served by the gateway); a
table row is one failpoint on one backend. Prints the seed first
(``SOAK_SEED`` repeats a soak), a table per failpoint, and last the line
``soak: R runs, S sessions, lost L, corrupt C, stuck K``. Exits 1 if anything was lost,
corrupt or stuck, a failpoint was never hit, or a step left something behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import time
from pathlib import Path

from blockferry.failpoints import Point
from tests.kafka_cluster import running_kafka
from tests.soak.matrix import ROLE_OF, MatrixRun, Tally
from tests.soak.report import print_report
from tests.soak.stores import BACKENDS, Stores


def main() -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("SOAK_RUNS", "20")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "0")) or None)
    parser.add_argument(
        "--kafka-nodes", type=int, default=int(os.environ.get("SOAK_KAFKA_NODES", "3"))
    )
    parser.add_argument(
        "--points",
        default=os.environ.get("SOAK_POINTS", ""),
        help="Comma-separated failpoints (default: every one the roles reach).",
    )
    parser.add_argument(
        "--backends",
        default=os.environ.get("SOAK_BACKENDS", ",".join(BACKENDS)),
        help=f"Comma-separated backends the runs take in turn ({', '.join(BACKENDS)}).",
    )
    args = parser.parse_args()
    backends = [name for name in args.backends.split(",") if name]
    seed = args.seed or random.SystemRandom().randrange(1, 2**31)
    # every point a role reaches; repo upgrade's are the CLI's, killed in its unit tests
    points = [Point(name) for name in args.points.split(",") if name] or list(ROLE_OF)
    print(f"soak: seed {seed} (SOAK_SEED={seed} repeats it), {args.runs} runs", flush=True)
    rng = random.Random(seed)
    tallies: dict[str, Tally] = {}
    scratch = Path(os.environ.get("BLOCKFERRY_DATA_DIR", ".blockferry")) / "soak"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    print(f"soak: logs and repositories in {scratch}", flush=True)
    with (
        running_kafka(scratch / "kafka", args.kafka_nodes) as bootstrap,
        contextlib.ExitStack() as servers,
    ):
        stores = Stores(scratch, servers)
        for number in range(1, args.runs + 1):
            order = rng.sample(points, len(points))
            workdir = (scratch / f"run-{number}").absolute()
            workdir.mkdir()
            place = stores.place(backends[(number - 1) % len(backends)], workdir)
            print(f"soak: run {number}/{args.runs}: {place.backend}, {place.owner}", flush=True)
            began = time.monotonic()
            run_rng = random.Random(rng.getrandbits(64))
            MatrixRun(bootstrap, workdir, run_rng, place).run(order, tallies)
            print(
                f"soak: run {number}/{args.runs} took {time.monotonic() - began:.0f} s",
                flush=True,
            )
    return print_report(tallies, args.runs, points)


if __name__ == "__main__":
    sys.exit(main())
