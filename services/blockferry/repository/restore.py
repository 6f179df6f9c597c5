"""Offline restore: a disk of a restore point, read straight from the repository."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blockferry.core.blocks import ZERO_DIGEST
from blockferry.core.errors import CorruptionError
from blockferry.repository.repository import Repository
from blockferry.restore_target import DiskWriter


@dataclass(frozen=True)
class RestoreResult:
    """What a restore wrote."""

    dest: Path
    disk_size: int
    blocks: int
    zero_blocks: int
    bytes_written: int
    device: bool


def restore_disk(
    repo: Repository,
    rp_id: str,
    disk: str,
    dest: Path,
    *,
    force: bool,
    progress: Callable[[int], None] | None = None,
    lock: bool = True,
) -> RestoreResult:
    """Restore ``disk`` of restore point ``rp_id`` to a file or block device.

    Every block is verified (checksum and keyed digest) before it is written.
    See :class:`~blockferry.restore_target.DiskWriter` for how files and devices
    are written; on any error an existing destination file is left untouched.

    Args:
        force: overwrite an existing destination.
        progress: called after each block with that block's length in bytes (an
            increment: the calls add up to the disk size).
        lock: hold a shared lock while restoring, and quarantine a damaged chunk (off
            for a read-only repository).

    Raises:
        RestorePointNotFound, ConfigError: no such restore point or disk.
        CorruptionError: a fixed index or chunk is damaged or missing.
        DestinationError: the destination is refused or cannot be written.
    """
    with repo.shared_lock("restore") if lock else contextlib.nullcontext():
        point = repo.restore_point(rp_id)
        fidx = repo.read_fixed_index(point, disk)
        zero_blocks = 0
        with DiskWriter.open(
            dest, fidx.disk_size, block_size=fidx.block_size, force=force
        ) as writer:
            for index, block_digest in enumerate(fidx.digests):
                if block_digest == ZERO_DIGEST:
                    writer.write_zeros(index)
                    zero_blocks += 1
                else:
                    data = repo.read_block(block_digest, quarantine=lock)
                    if len(data) != fidx.block_length(index):
                        raise CorruptionError(
                            f"restoring block {index} of disk {disk}: chunk "
                            f"{block_digest.hex()} has {len(data)} bytes, the block "
                            f"{fidx.block_length(index)}"
                        )
                    writer.write_block(index, data)
                if progress is not None:
                    progress(fidx.block_length(index))
            writer.commit()
        return RestoreResult(
            dest=Path(dest),
            disk_size=fidx.disk_size,
            blocks=fidx.block_count,
            zero_blocks=zero_blocks,
            bytes_written=writer.bytes_written,
            device=writer.is_device,
        )
