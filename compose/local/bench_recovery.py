"""`make bench-recovery` (and the end of `make bench`): instant recovery and file-level
restore against a full restore.

A 4 GiB GPT disk (BENCH_RECOVERY_GIB) with one ext4 partition, made by mkfs.ext4 from a
tree of a 256 MiB file, 2000 small files in one directory and 512 MiB of other files
(random bytes: nothing compresses or dedupes), is stored into an encrypted repository
with 1 MiB blocks, in a local directory and in an S3 bucket on a MinIO server started
here. On each, from the operator's side (each command a new process, as typed):

- time to first byte: ``blockferry repo export`` started until ``qemu-io`` has read the
  disk's first 4 KiB through it;
- a directory listing: ``blockferry repo files ls`` of the directory of 2000 files;
- one file: ``blockferry repo files restore`` of the 256 MiB file, against ``blockferry
  repo restore`` of the whole disk;
- a sequential read of the whole disk through the export (``nbdcopy`` to ``null:``),
  against the same full restore.

Results: .blockferry/bench-recovery/bench-recovery.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "compose" / "local"))

from bench_storage import BLOCK_SIZE, store  # noqa: E402

from blockferry.repository import Repository  # noqa: E402
from blockferry.repository.keys import Secret, write_key_file  # noqa: E402
from blockferry.repository.local_storage import LocalStorage  # noqa: E402
from tests.disk_images import MiB, Partition, ext4, partitioned  # noqa: E402
from tests.minio import running_minio  # noqa: E402

WORK = ROOT / ".blockferry" / "bench-recovery"
BLOCKFERRY = [sys.executable, "-m", "blockferry.cli"]
BIG = "/p1/big/file.bin"
MANY = "/p1/many"


def make_disk(gib: int) -> Path:
    tree = _fresh(WORK / "tree")
    rng = random.Random(22)
    (tree / "big").mkdir()
    _random_file(tree / "big" / "file.bin", 256 * MiB, rng)
    (tree / "many").mkdir()
    for number in range(2000):
        (tree / "many" / f"file-{number:04}.txt").write_bytes(rng.randbytes(rng.randrange(8192)))
    (tree / "other").mkdir()
    for number in range(4):
        _random_file(tree / "other" / f"{number}.bin", 128 * MiB, rng)
    filesystem = ext4(tree, WORK / "ext4.img", gib * 1024 - 3)
    disk = partitioned(WORK / "disk.img", [Partition(filesystem)])
    (WORK / "ext4.img").unlink()
    return disk


def _random_file(path: Path, size: int, rng: random.Random) -> None:
    with path.open("wb") as file:
        for _ in range(size // MiB):
            file.write(rng.randbytes(MiB))


def measure(
    label: str, location: str, repo: Repository, disk: Path, env: dict[str, str]
) -> dict[str, Any]:
    rp = store(repo, disk)
    figures: dict[str, Any] = {}
    socket = WORK / f"{label}.sock"
    started = time.monotonic()
    export = subprocess.Popen(
        [*BLOCKFERRY, "repo", "export", location, rp, "--socket", str(socket)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert export.stdout is not None
        uri = export.stdout.readline().strip()
        _run("qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", uri)
        figures["first_byte_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        _run("nbdcopy", uri, "null:")
        figures["export_sequential_s"] = round(time.monotonic() - started, 2)
    finally:
        export.terminate()
        export.wait(timeout=60)

    started = time.monotonic()
    listed = _run(*BLOCKFERRY, "repo", "files", "ls", location, rp, MANY, "--json", env=env)
    figures["listing_s"] = round(time.monotonic() - started, 2)
    assert len(json.loads(listed)["entries"]) == 2000

    into = _fresh(WORK / f"{label}-files")
    started = time.monotonic()
    _run(*BLOCKFERRY, "repo", "files", "restore", location, rp, BIG, "--to", str(into), env=env)
    figures["file_256mib_s"] = round(time.monotonic() - started, 2)
    assert (into / "file.bin").read_bytes() == (WORK / "tree" / "big" / "file.bin").read_bytes()
    shutil.rmtree(into)

    out = WORK / f"{label}-restored.img"
    started = time.monotonic()
    _run(*BLOCKFERRY, "repo", "restore", location, rp, "--to", str(out), "--force", env=env)
    figures["full_restore_s"] = round(time.monotonic() - started, 2)
    out.unlink()

    gib = disk.stat().st_size / (1 << 30)
    figures["export_sequential_mib_s"] = round(gib * 1024 / figures["export_sequential_s"], 1)
    figures["full_restore_mib_s"] = round(gib * 1024 / figures["full_restore_s"], 1)
    figures["file_vs_full"] = round(figures["file_256mib_s"] / figures["full_restore_s"], 3)
    figures["export_vs_full"] = round(figures["export_sequential_s"] / figures["full_restore_s"], 2)
    return figures


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    gib = int(os.environ.get("BENCH_RECOVERY_GIB", "4"))
    WORK.mkdir(parents=True, exist_ok=True)
    disk = make_disk(gib)
    key_file = WORK / "repo.key"
    key_file.unlink(missing_ok=True)
    write_key_file(key_file)
    secret = Secret.key_file(key_file)
    env = {**os.environ, "BLOCKFERRY_REPO_KEY_FILE": str(key_file)}
    doc: dict[str, Any] = {"disk_gib": gib, "data_mib": 256 + 512 + 8}
    local = _fresh(WORK / "local-repo")
    repo = Repository.init(LocalStorage(local), block_size=BLOCK_SIZE, secret=secret)
    doc["local"] = measure("local", str(local), repo, disk, env)
    print(f"local: {json.dumps(doc['local'])}", flush=True)
    with running_minio(_fresh(WORK / "minio")) as minio:
        bucket = minio.new_bucket()
        repo = Repository.init(minio.storage(bucket), block_size=BLOCK_SIZE, secret=secret)
        location = f"s3://{bucket}/repo?endpoint={minio.endpoint}"
        doc["s3"] = measure("s3", location, repo, disk, {**env, **minio.env()})
        print(f"s3: {json.dumps(doc['s3'])}", flush=True)
    (WORK / "bench-recovery.json").write_text(json.dumps(doc, indent=2))
    print()
    print(f"a {gib} GiB disk, ext4 holding about 776 MiB of files, encrypted, 1 MiB blocks")
    print(f"{'':>6} {'1st byte':>9} {'ls 2000':>8} {'256 MiB file':>13} {'full restore':>13}"
          f" {'export read':>12}")  # fmt: skip
    for name in ("local", "s3"):
        f = doc[name]
        print(
            f"{name:>6} {f['first_byte_s']:>8}s {f['listing_s']:>7}s {f['file_256mib_s']:>12}s"
            f" {f['full_restore_s']:>12}s {f['export_sequential_s']:>11}s"
            f"   (file/full {f['file_vs_full']}, export/full {f['export_vs_full']},"
            f" {f['export_sequential_mib_s']} MiB/s through the export)"
        )


if __name__ == "__main__":
    main()
