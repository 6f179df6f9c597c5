"""Disk images with real file systems, built by the file systems' own tools (no mount, no
loop device): a source tree, each file system made from it, partitioned with sfdisk."""

from __future__ import annotations

import os
import random
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.system import need_commands

MiB = 1024 * 1024
TIME_NS = 1_700_000_000_123_456_789
"""The modification time every entry of the source tree gets (a whole second on FAT)."""


def run(*args: str | Path) -> None:
    subprocess.run([str(arg) for arg in args], check=True, capture_output=True, timeout=120)


def source_tree(root: Path, *, posix: bool = True) -> Path:
    """A tree with directories, small and multi-block files, a sparse file and, when
    ``posix``, a symlink, modes and owners other than the defaults."""
    rng = random.Random(22)
    (root / "etc" / "app").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "etc" / "hostname").write_text("restored-vm\n")
    (root / "etc" / "app" / "config.yaml").write_text("port: 8080\n" * 40)
    (root / "data" / "big.bin").write_bytes(rng.randbytes(3 * MiB + 12345))
    (root / "data" / "small.bin").write_bytes(rng.randbytes(700))
    with open(root / "data" / "sparse.img", "wb") as sparse:
        sparse.truncate(8 * MiB)
        sparse.seek(5 * MiB)
        sparse.write(b"in the middle of holes")
    if posix:
        (root / "etc" / "current").symlink_to("app/config.yaml")
        os.chmod(root / "etc" / "app" / "config.yaml", 0o640)
        os.chmod(root / "data", 0o750)
        os.chown(root / "data" / "small.bin", 1000, 1001)
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, ns=(TIME_NS, TIME_NS), follow_symlinks=False)
    return root


def ext4(tree: Path, out: Path, size_mib: int) -> Path:
    need_commands("e2fsprogs", "mkfs.ext4")
    run("mkfs.ext4", "-q", "-F", "-I", "256", "-d", tree, out, f"{size_mib}M")
    return out


def btrfs(tree: Path, out: Path, size_mib: int) -> Path:
    need_commands("btrfs-progs", "mkfs.btrfs")
    with open(out, "wb") as image:
        image.truncate(size_mib * MiB)
    run("mkfs.btrfs", "-q", "-f", "--rootdir", tree, out)
    return out


def xfs(tree: Path, out: Path, size_mib: int) -> Path:
    """XFS from a protofile describing ``tree`` (xfsprogs' way to fill a new file system)."""
    need_commands("xfsprogs", "mkfs.xfs")
    proto = out.with_suffix(".proto")
    proto.write_text("\n".join(["/dev/null", "0 0", *_proto_dir(tree, 0), "$", ""]))
    with open(out, "wb") as image:
        image.truncate(size_mib * MiB)
    run("mkfs.xfs", "-q", "-f", "-p", proto, out)
    return out


def _proto_dir(directory: Path, depth: int) -> list[str]:
    st = directory.lstat()
    lines = [f"{'d--'}{stat.S_IMODE(st.st_mode):03o} {st.st_uid} {st.st_gid}"]
    if depth == 0:
        lines = [lines[0]]
    for child in sorted(directory.iterdir()):
        cst = child.lstat()
        owner = f"{stat.S_IMODE(cst.st_mode):03o} {cst.st_uid} {cst.st_gid}"
        if child.is_symlink():
            lines.append(f"{child.name} l--{owner} {os.readlink(child)}")
        elif child.is_dir():
            inner = _proto_dir(child, depth + 1)
            lines.append(f"{child.name} {inner[0]}")
            lines += inner[1:]
        else:
            lines.append(f"{child.name} ---{owner} {child}")
    return [*lines, "$"] if depth else lines


def fat(tree: Path, out: Path, size_mib: int) -> Path:
    need_commands("dosfstools", "mkfs.fat")
    need_commands("mtools", "mcopy")
    out.unlink(missing_ok=True)
    run("mkfs.fat", "-C", out, str(size_mib * 1024))
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    entries = [str(child) for child in sorted(tree.iterdir())]
    subprocess.run(
        ["mcopy", "-s", "-m", "-i", str(out), *entries, "::/"],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    return out


@dataclass(frozen=True)
class Partition:
    image: Path
    type: str = "linux"


def partitioned(out: Path, partitions: list[Partition], label: str = "gpt") -> Path:
    """A disk (partition table ``label``: gpt or dos) holding each file system image in a
    partition of its size (1 MiB aligned), written in with plain file I/O."""
    need_commands("fdisk", "sfdisk")
    offset = MiB
    layout = [f"label: {label}"]
    places = []
    for partition in partitions:
        size = partition.image.stat().st_size
        layout.append(f"start={offset // 512}, size={size // 512}, type={partition.type}")
        places.append((offset, partition.image))
        offset += -(-size // MiB) * MiB
    with open(out, "wb") as disk:
        disk.truncate(offset + MiB)
    subprocess.run(
        ["sfdisk", "-q", str(out)],
        input="\n".join(layout) + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    with open(out, "r+b") as disk:
        for start, image in places:
            with open(image, "rb") as source:
                disk.seek(start)
                while data := source.read(4 * MiB):
                    if data.count(0) == len(data):
                        disk.seek(len(data), os.SEEK_CUR)
                    else:
                        disk.write(data)
    return out
