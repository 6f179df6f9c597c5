"""The dirty bitmaps blockferry keeps in qcow2 images, on real images made by qemu-img."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from blockferry.core.errors import SourceError
from blockferry.source_mover import qcow2
from tests.system import need_commands

pytestmark = pytest.mark.nbd


@pytest.fixture(autouse=True)
def _qemu_img() -> None:
    need_commands("qemu-utils", "qemu-img")


RP = ["20261127T010000Z-0000000a", "20261127T020000Z-0000000b", "20261127T030000Z-0000000c"]


def image_with(tmp_path: Path, *names: str) -> Path:
    image = tmp_path / "vm.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "4M"], check=True)
    for name in names:
        subprocess.run(["qemu-img", "bitmap", "--add", str(image), name], check=True)
    return image


async def names(image: Path) -> set[str]:
    return {b.name for b in await qcow2.bitmaps(image)}


async def test_only_this_jobs_stale_bitmaps_are_removed(tmp_path: Path) -> None:
    others = {"nightly", f"blockferry.a.b.{RP[0]}", f"blockferry.other.{RP[0]}"}
    image = image_with(tmp_path, f"blockferry.a.{RP[0]}", f"blockferry.a.{RP[1]}", *others)

    tracking = await qcow2.prepare_bitmaps(image, "a", RP[1], RP[2])

    assert tracking == qcow2.Tracking(f"blockferry.a.{RP[1]}")
    assert await names(image) == {f"blockferry.a.{RP[1]}", f"blockferry.a.{RP[2]}", *others}


async def test_a_full_backup_starts_tracking_and_a_retry_keeps_its_bitmap(tmp_path: Path) -> None:
    image = image_with(tmp_path)
    assert await qcow2.prepare_bitmaps(image, "a", None, RP[0]) == qcow2.Tracking(None)
    assert await qcow2.prepare_bitmaps(image, "a", None, RP[0]) == qcow2.Tracking(None)
    assert await names(image) == {f"blockferry.a.{RP[0]}"}


async def test_a_missing_parent_bitmap_is_a_warning_and_the_new_one_is_added(
    tmp_path: Path,
) -> None:
    image = image_with(tmp_path, f"blockferry.a.{RP[0]}")
    tracking = await qcow2.prepare_bitmaps(image, "a", RP[1], RP[2])
    assert tracking.parent_bitmap is None
    assert f"has no dirty bitmap blockferry.a.{RP[1]}" in tracking.warning
    assert await names(image) == {f"blockferry.a.{RP[2]}"}


async def test_a_file_that_is_not_qcow2(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 4096)
    assert not qcow2.is_qcow2(str(raw))
    assert not qcow2.is_qcow2(str(tmp_path / "absent"))
    os.mkfifo(tmp_path / "fifo")
    assert not qcow2.is_qcow2(str(tmp_path / "fifo")), "without waiting for a writer"
    assert qcow2.is_qcow2(str(image_with(tmp_path)))
    with pytest.raises(SourceError, match="qemu-img info on"):
        await qcow2.bitmaps(raw)
