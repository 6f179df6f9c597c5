"""`make bench-storage` (and the end of `make bench`): what a repository's backend costs.

Through the mesh (every role its own process, one Kafka broker started here): a full
backup and a restore of an image into a repository in a local directory served by the
target mover, and on S3 and an SMB share served by the gateway; wall times, MiB/s, the
ratio to the local directory, and on S3 the gateway's requests per GiB written and read.

Without the mesh, the backend alone: for each backend (a local directory; S3 on a MinIO
server started here; SMB on a Samba server started here), into a fresh encrypted
repository: the target side's store path for an image (digest, compress, seal into
32 MiB packs as the pipeline does, stage and commit its fixed index), then a restore of
it through ``restore_disk`` (every chunk read, checked and written). It prints wall
time and MiB/s per backend, the ratio to the local directory, and the requests per GiB
written and read on S3. Then a gateway's start-up on S3 over BENCH_STORAGE_PACKS small
packs: the repository steps a start runs (leftovers, crashed commits, missing index
files, the pack index loaded and republished), the first start and the second (which
has the index snapshot), with their request counts and times.

Environment: BENCH_STORAGE_MIB (image size, default 1024), BENCH_STORAGE_PACKS
(default 10000). Results: .blockferry/bench-storage/bench-storage.json.

The image is incompressible (random), text and zeros in turn: the figures are the
store's cost, not dedupe's.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from blockferry.core.blocks import ZERO_DIGEST, compress, digest, is_zero  # noqa: E402
from blockferry.repository import Repository, restore_disk  # noqa: E402
from blockferry.repository.keys import Secret, write_key_file  # noqa: E402
from blockferry.repository.local_storage import LocalStorage  # noqa: E402
from blockferry.repository.storage import Storage  # noqa: E402
from tests.e2e.harness import MeshProcesses  # noqa: E402
from tests.kafka_cluster import running_kafka  # noqa: E402
from tests.minio import MinioServer, running_minio  # noqa: E402
from tests.samba import SambaServer, running_samba  # noqa: E402

BLOCK_SIZE = 1024 * 1024
PACK_SIZE = 32 * 1024 * 1024
WORK = ROOT / ".blockferry" / "bench-storage"


def make_image(path: Path, mib: int) -> None:
    """Half incompressible blocks, a quarter compressible text, a quarter zeros."""
    rng = random.Random(7)
    with path.open("wb") as f:
        for i in range(mib):
            kind = i % 4
            if kind < 2:
                f.write(rng.randbytes(BLOCK_SIZE))
            elif kind == 2:
                f.write((f"block {i} of a text file ".encode() * BLOCK_SIZE)[:BLOCK_SIZE])
            else:
                f.write(bytes(BLOCK_SIZE))


def store(repo: Repository, image: Path) -> str:
    """The target side's work for one disk: each new block digested, compressed and
    packed (a pack sealed at PACK_SIZE), the fixed index staged, the restore point
    committed. Returns its id."""
    digests: list[bytes] = []
    writer = repo.open_pack()
    with image.open("rb") as f:
        while data := f.read(BLOCK_SIZE):
            if is_zero(data):
                digests.append(ZERO_DIGEST)
                continue
            block_digest = digest(data, repo.config.dedupe_key)
            digests.append(block_digest)
            if repo.locate(block_digest) is None and not writer.contains(block_digest):
                packed = compress(data, 3)
                smaller = len(packed) < len(data)
                writer.add(block_digest, packed if smaller else data, smaller, len(data))
                if writer.size >= PACK_SIZE:
                    writer.seal()
                    writer = repo.open_pack()
    if writer.count:
        writer.seal()
    else:
        writer.abort()
    session = f"bench{time.time_ns()}"
    repo.stage_fixed_index(session, "d", image.stat().st_size, digests)
    return repo.commit_restore_point(
        job="bench", session_id=session, disks=["d"], parent=None, stats={}
    ).id


def measure(storage: Storage, key_file: Path, image: Path, out: Path) -> dict[str, Any]:
    repo = Repository.init(storage, block_size=BLOCK_SIZE, secret=Secret.key_file(key_file))
    requests = getattr(storage, "requests", dict)
    before = dict(requests())
    started = time.monotonic()
    rp = store(repo, image)
    stored_s = time.monotonic() - started
    written = _delta(requests(), before)
    before = dict(requests())
    started = time.monotonic()
    restore_disk(repo, rp, "d", out, force=True)
    restored_s = time.monotonic() - started
    read = _delta(requests(), before)
    _check_restored(out, image, storage.where())
    return _figures(image, stored_s, restored_s, written, read)


def through_mesh(bootstrap: str, backend: str, location: str | None, image: Path) -> dict[str, Any]:
    """A full backup of ``image`` and its restore through the mesh, into a new
    repository at ``location`` (None: a directory, the target mover's; else the
    gateway's), with the owner's storage requests of each."""
    owner = "target-mover" if location is None else "gateway"
    workdir = _fresh(WORK / f"mesh-{backend}")
    mesh = MeshProcesses(
        bootstrap, f"bench{time.time_ns()}", workdir, location=location, owner=owner
    )
    try:
        mesh.up(shards=2, block_kib=BLOCK_SIZE // 1024)
        before = _storage_requests(mesh, owner)
        started = time.monotonic()
        backup = mesh.cli_json("backup", str(image), "--job", "bench", "--disk", "d", "--wait")
        backup_s = time.monotonic() - started
        if backup["state"] != "success":
            raise SystemExit(f"bench-storage: the backup to {backend} ended {backup['state']}")
        written = _delta(_storage_requests(mesh, owner), before)
        before = _storage_requests(mesh, owner)
        started = time.monotonic()
        out = workdir / "restored.raw"  # under the mesh's restore root
        mesh.cli("restore", backup["restore_point"], "--to", str(out), "--json", check=True)
        restore_s = time.monotonic() - started
        read = _delta(_storage_requests(mesh, owner), before)
    finally:
        mesh.close()
    _check_restored(out, image, f"{backend} through the mesh")
    return {"role": owner, **_figures(image, backup_s, restore_s, written, read)}


def _check_restored(out: Path, image: Path, source: str) -> None:
    if out.read_bytes() != image.read_bytes():
        raise SystemExit(f"bench-storage: the restore from {source} differs")
    out.unlink()


def _figures(
    image: Path, backup_s: float, restore_s: float, written: dict[str, int], read: dict[str, int]
) -> dict[str, Any]:
    mib = image.stat().st_size / 2**20
    return {
        "backup_s": round(backup_s, 3),
        "backup_mib_s": round(mib / backup_s, 1),
        "restore_s": round(restore_s, 3),
        "restore_mib_s": round(mib / restore_s, 1),
        "requests_written": written,
        "requests_read": read,
    }


def _storage_requests(mesh: MeshProcesses, role: str) -> dict[str, int]:
    """The role's storage requests from its metrics: what the backend counted it sent
    (S3's HTTP requests, by API call) where it counts them, else its storage operations."""
    text = mesh.metrics(role)
    metric = f"blockferry_{role.replace('-', '_')}_storage_backend_requests_total"
    if metric + "{" not in text:
        metric = f"blockferry_{role.replace('-', '_')}_storage_requests_total"
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("repository") == "default":
                what = labels.get("call") or labels["operation"]
                counts[what] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def start_up(minio: MinioServer, packs: int, key_file: Path) -> dict[str, Any]:
    """A repository of ``packs`` one-chunk packs on S3, then two starts' requests."""
    bucket = minio.new_bucket()
    secret = Secret.key_file(key_file)
    repo = Repository.init(minio.storage(bucket), block_size=BLOCK_SIZE, secret=secret)
    rng = random.Random(11)
    started = time.monotonic()
    for _ in range(packs):
        writer = repo.open_pack()
        data = rng.randbytes(4096)
        writer.add(digest(data, repo.config.dedupe_key), data, False, len(data))
        writer.seal()
    result: dict[str, Any] = {"packs": packs, "write_s": round(time.monotonic() - started, 1)}
    for run in ("first", "second"):
        storage = minio.storage(bucket)
        started = time.monotonic()
        opened = Repository.open(storage, secret=secret)
        opened.remove_leftovers()
        opened.remove_interrupted_commits()
        opened.rebuild_index(missing_only=True)
        chunks = sum(1 for _ in opened.located_entries())
        counts = storage.requests()
        result[run] = {
            "seconds": round(time.monotonic() - started, 2),
            "requests": sum(counts.values()),
            "by_operation": dict(counts),
            "chunks": chunks,
        }
    return result


def main() -> None:
    mib = int(os.environ.get("BENCH_STORAGE_MIB", "1024"))
    packs = int(os.environ.get("BENCH_STORAGE_PACKS", "10000"))
    WORK.mkdir(parents=True, exist_ok=True)
    image, out = WORK / "image.raw", WORK / "restored.raw"
    make_image(image, mib)
    key_file = WORK / "repo.key"
    key_file.unlink(missing_ok=True)
    write_key_file(key_file)
    doc: dict[str, Any] = {"image_mib": mib, "mesh": {}, "backends": {}}
    with (
        running_minio(_fresh(WORK / "minio")) as minio,
        running_samba(_fresh(WORK / "samba")) as samba,
    ):
        with running_kafka(_fresh(WORK / "kafka"), 1) as bootstrap:
            os.environ.update(minio.env())  # the gateway's credentials, as an operator's
            for backend, location in _mesh_locations(minio, samba):
                doc["mesh"][backend] = through_mesh(bootstrap, backend, location, image)
                print(f"mesh, {backend}: {json.dumps(doc['mesh'][backend])}", flush=True)
        backends: dict[str, Storage] = {
            "local": LocalStorage(_fresh(WORK / "local-repo")),
            "s3": minio.storage(minio.new_bucket()),
            "smb": samba.storage("repo/"),
        }
        for name, storage in backends.items():
            doc["backends"][name] = measure(storage, key_file, image, out)
            print(f"{name}: {json.dumps(doc['backends'][name])}", flush=True)
        doc["start_up_s3"] = start_up(minio, packs, key_file)
    for table in (doc["mesh"], doc["backends"]):
        _ratios(table, mib / 1024)
    (WORK / "bench-storage.json").write_text(json.dumps(doc, indent=2))
    print()
    print(f"image {mib} MiB, encrypted repositories, 1 MiB blocks")
    _print_table("through the mesh: full backup, restore", doc["mesh"])
    _print_table("the backend alone: store (no Kafka), restore_disk", doc["backends"])
    start = doc["start_up_s3"]
    for run in ("first", "second"):
        print(
            f"gateway start-up on S3, {start['packs']} packs, {run} start:"
            f" {start[run]['requests']} requests in {start[run]['seconds']} s"
        )


def _mesh_locations(minio: MinioServer, samba: SambaServer) -> Iterator[tuple[str, str | None]]:
    yield "local", None
    yield "s3", f"s3://{minio.new_bucket()}/repo?endpoint={minio.endpoint}"
    password_file = WORK / "smb-password"
    password_file.write_text(samba.password)
    password_file.chmod(0o600)
    yield (
        "smb",
        (
            f"smb://{samba.user}@{samba.host}:{samba.port}/{samba.share}/mesh"
            f"?password_file={password_file}"
        ),
    )


def _ratios(table: dict[str, dict[str, Any]], gib: float) -> None:
    """Each backend's times against the local directory's, and S3's requests per GiB."""
    local = table["local"]
    for figures in table.values():
        figures["backup_vs_local"] = round(figures["backup_s"] / local["backup_s"], 2)
        figures["restore_vs_local"] = round(figures["restore_s"] / local["restore_s"], 2)
        if "UploadPart" in figures["requests_written"]:  # S3's HTTP requests
            figures["requests_per_gib_written"] = round(
                sum(figures["requests_written"].values()) / gib, 1
            )
            figures["requests_per_gib_read"] = round(
                sum(figures["requests_read"].values()) / gib, 1
            )


def _print_table(title: str, table: dict[str, dict[str, Any]]) -> None:
    print(title)
    print(
        f"  {'backend':8} {'backup MiB/s':>12} {'x local':>8} {'restore MiB/s':>14}"
        f" {'x local':>8} {'req/GiB written':>16} {'req/GiB read':>13}"
    )
    for name, f in table.items():
        print(
            f"  {name:8} {f['backup_mib_s']:>12} {f['backup_vs_local']:>8}"
            f" {f['restore_mib_s']:>14} {f['restore_vs_local']:>8}"
            f" {f.get('requests_per_gib_written', '-'):>16}"
            f" {f.get('requests_per_gib_read', '-'):>13}"
        )


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
