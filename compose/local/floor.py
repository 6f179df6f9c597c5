#!/usr/bin/env python3
"""The floor line of `make bench`: the CPU and disk work of our full backup without
Kafka, lookups or a repository. The image is read as the source mover reads it (its
FileSource: holes not read, a pread per block), each block zero-tested, digested with
keyed BLAKE3, deduplicated within the run, compressed as the bench's backups are where
that makes it smaller, and checksummed; the same thread count and blocks per window
as the source mover's settings (BLOCKFERRY_SOURCE_MOVER__WORKERS, __IN_FLIGHT). Each
window is split into one contiguous slice per thread, as the source mover does.
Prints one JSON object: seconds (from the first read to the last block), blocks
read, zero, sent and bytes of the stored result.

    floor.py IMAGE --block-size BYTES --compression NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from blockferry.core import blocks
from blockferry.source_mover.disk_source import FileSource
from blockferry.source_mover.settings import SourceMoverConfig

KEY = bytes(32)
"""A fixed dedupe key: the digest costs the same for any key."""


def settings() -> SourceMoverConfig:
    """The source mover's thread count and window size as the mesh would read them."""
    fields = {
        name: int(os.environ[f"BLOCKFERRY_SOURCE_MOVER__{name.upper()}"])
        for name in ("workers", "in_flight")
        if f"BLOCKFERRY_SOURCE_MOVER__{name.upper()}" in os.environ
    }
    return SourceMoverConfig(**fields)


class Floor:
    def __init__(self, source: FileSource, level: int) -> None:
        self.source = source
        self.level = level
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()
        self.counts = {"blocks_read": 0, "blocks_zero": 0, "blocks_sent": 0, "bytes_stored": 0}

    def work(self, indexes: list[int]) -> None:
        """Read, zero-test, digest, deduplicate, compress and checksum a slice (a thread)."""
        read = zero = sent = stored_bytes = 0
        for index in indexes:
            data = self.source.read_block(index)
            read += 1
            if blocks.is_zero(data):
                zero += 1
                continue
            digest = blocks.digest(data, KEY)
            with self.lock:
                if digest in self.seen:
                    continue
                self.seen.add(digest)
            stored = data
            if self.level:
                packed = blocks.compress(data, self.level)
                if len(packed) < len(data):
                    stored = packed
            blocks.checksum(stored)
            sent += 1
            stored_bytes += len(stored)
        with self.lock:
            for name, value in (
                ("blocks_read", read),
                ("blocks_zero", zero),
                ("blocks_sent", sent),
                ("bytes_stored", stored_bytes),
            ):
                self.counts[name] += value


async def run(image: Path, block_size: int, level: int) -> dict[str, float | int]:
    config = settings()
    source = FileSource(image, block_size)
    pool = ThreadPoolExecutor(config.workers, thread_name_prefix="floor")
    loop = asyncio.get_running_loop()
    floor = Floor(source, level)
    started = time.perf_counter()
    zero = await source.zero_blocks()
    wanted = [i for i in range(source.blocks) if i not in zero]
    windows = [wanted[i : i + config.in_flight] for i in range(0, len(wanted), config.in_flight)]
    slice_size = -(-config.in_flight // config.workers)
    # every slice is queued at once: the pool's threads never wait for the loop
    await asyncio.gather(
        *(
            loop.run_in_executor(pool, floor.work, window[i : i + slice_size])
            for window in windows
            for i in range(0, len(window), slice_size)
        )
    )
    seconds = time.perf_counter() - started
    pool.shutdown()
    await source.close()
    return {
        "seconds": seconds,
        "workers": config.workers,
        "in_flight": config.in_flight,
        "blocks_hole": source.blocks - len(wanted),
        **floor.counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", type=Path)
    parser.add_argument("--block-size", type=int, required=True)
    parser.add_argument("--compression", required=True, help="As blockferry backup takes it.")
    args = parser.parse_args()
    level = blocks.parse_compression(args.compression).zstd_level
    print(json.dumps(asyncio.run(run(args.image, args.block_size, level))))


if __name__ == "__main__":
    main()
