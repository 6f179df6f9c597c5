"""`make run-two-sites`: the two-site topology on this machine, end to end.

Starts an on-site and an off-site Kafka cluster, MirrorMaker 2 off-site, the relay that
carries every byte between the sites (the WAN link), the orchestrator, a source mover
and the dedupe index on-site and the target mover with its repository off-site, each
role its own process. Then, on-site, into the off-site repository: a full backup of an
image of real OS files (a Debian root in ext4, built once by os_image.sh), an
incremental after some of its blocks changed, and a backup of that same image under a
second job; then restores each restore point from off-site and compares it byte for
byte. For each backup it prints the bytes the relay carried (both ways) and the bytes
the off-site repository gained, and last the line

    two sites: restores identical, WAN ratio R

R = all bytes the relay carried during the three backups / all bytes the repository
gained from them, both measured. With TWO_SITES_COMPARE_DIRECT=1 it first runs the same
backups in the simpler mode, one cluster on-site that the target mover reaches directly
through the relay, and prints that ratio too. Work dir: .blockferry/two-sites (the
image is kept).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import MeshProcesses  # noqa: E402
from tests.two_sites import Sites, running_direct, running_two_sites  # noqa: E402

WORK = ROOT / ".blockferry" / "two-sites"
IMAGE_MIB = 1536
IMAGE_PACKAGES = "python3,git,vim"
BLOCK = 256 * 1024
CHANGED_BLOCKS = 64
PREFIX = f"two{int(time.time())}"
"""The topic prefix of this run's meshes (each mode has clusters of its own)."""


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    image = WORK / "os.img"
    subprocess.run(
        [
            "bash",
            str(ROOT / "compose/local/os_image.sh"),
            str(image),
            str(IMAGE_MIB),
            IMAGE_PACKAGES,
        ],
        check=True,
    )
    if os.environ.get("TWO_SITES_COMPARE_DIRECT"):
        run = _fresh(WORK / "direct")
        print(
            "== the simpler mode: one cluster on-site, the target mover reaching it"
            " directly through the link",
            flush=True,
        )
        with running_direct(run / "sites") as sites:
            direct = _backups_and_restores(sites, image, run)
        print(f"   direct: WAN ratio {direct:.3f}", flush=True)
    run = _fresh(WORK / "run")
    print("== two sites: Kafka on-site and off-site, MirrorMaker 2, the relay", flush=True)
    with running_two_sites(run / "sites", PREFIX) as sites:
        ratio = _backups_and_restores(sites, image, run)
    print(f"two sites: restores identical, WAN ratio {ratio:.3f}")
    return 0


def _backups_and_restores(sites: Sites, image: Path, run: Path) -> float:
    """The three backups on-site into the off-site repository, then the restores from
    off-site, each compared; the WAN ratio of the backups."""
    disk = run / "vm.img"
    shutil.copyfile(image, disk)
    mesh = MeshProcesses(sites.onsite, PREFIX, run, role_env=sites.role_env())
    try:
        print(
            f"   on-site Kafka {sites.onsite}, off-site Kafka {sites.offsite},"
            f" the link {sites.relay.address}",
            flush=True,
        )
        print(
            "== the roles: orchestrator, source mover, dedupe index on-site; target mover off-site",
            flush=True,
        )
        mesh.up(shards=2)
        sites.wait_until_known(mesh)
        expected: dict[str, Path] = {}
        carried_total = stored_total = 0
        for step, job, change in (
            ("full backup", "vm", False),
            ("incremental", "vm", True),
            ("second job, same image", "vm-clone", False),
        ):
            if change:
                _change_blocks(disk)
            carried, stored = sites.relay.total(), _tree_bytes(mesh.repository)
            began = time.monotonic()
            session = mesh.cli_json("backup", str(disk), "--job", job, "--disk", "d", "--wait")
            if session["state"] != "success":
                raise SystemExit(f"two sites: the {step} ended {session['state']}: {session}")
            carried = sites.relay.total() - carried
            stored = _tree_bytes(mesh.repository) - stored
            carried_total += carried
            stored_total += stored
            copy = run / f"expected-{len(expected)}.img"
            shutil.copyfile(disk, copy)
            expected[session["restore_point"]] = copy
            print(
                f"   {step}: {time.monotonic() - began:.1f} s, the link carried"
                f" {_mib(carried)} both ways, the off-site repository gained {_mib(stored)}",
                flush=True,
            )
        print("== restores from off-site", flush=True)
        for restore_point, copy in expected.items():
            restored = run / "restored.img"
            restored.unlink(missing_ok=True)
            mesh.cli_json("restore", restore_point, "--to", str(restored))
            if not _same(restored, copy):
                raise SystemExit(f"two sites: the restore of {restore_point} differs")
            print(f"   {restore_point}: identical", flush=True)
    finally:
        mesh.close()
    return carried_total / stored_total


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _change_blocks(disk: Path) -> None:
    """Overwrite some blocks, spread over the disk: new data, as files written would."""
    rng = random.Random(7)
    blocks = disk.stat().st_size // BLOCK
    with disk.open("r+b") as f:
        for index in rng.sample(range(blocks), CHANGED_BLOCKS):
            f.seek(index * BLOCK)
            f.write(rng.randbytes(BLOCK // 2) + bytes(BLOCK // 2))


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _same(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _mib(count: int) -> str:
    return f"{count / 2**20:.2f} MiB ({count} bytes)"


if __name__ == "__main__":
    sys.exit(main())
