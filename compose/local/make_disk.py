#!/usr/bin/env python3
"""Write a deterministic demo disk image: zero, compressible, incompressible and
repeated regions, and a size that is not a multiple of any block size.

    make_disk.py PATH SIZE_MIB [--seed N] [--tail BYTES]
"""

from __future__ import annotations

import argparse
import random

MIB = 1024 * 1024
WORDS = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]


def region(rng: random.Random, kind: int, size: int, seen: list[bytes]) -> bytes | None:
    """The bytes of one region, or None for zeros (left as a hole)."""
    if kind < 3:
        return None
    if kind < 6:
        line = b" ".join(rng.choice(WORDS) for _ in range(12)) + b" %d\n" % rng.getrandbits(32)
        data = (line * (size // len(line) + 1))[:size]
        seen.append(data)
        return data
    if kind < 8 or not seen:
        data = rng.randbytes(size)
        seen.append(data)
        return data
    return rng.choice(seen[-64:])


def write_disk(path: str, size_mib: int, seed: int, tail: int) -> None:
    rng = random.Random(seed)
    seen: list[bytes] = []
    total = size_mib * MIB + tail
    with open(path, "wb") as out:
        offset = 0
        while offset < total:
            size = min(MIB, total - offset)
            data = region(rng, rng.randrange(10), size, seen)
            if data is not None:
                out.seek(offset)
                out.write(data[:size])
            offset += size
        out.truncate(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("size_mib", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tail", type=int, default=12345, help="Bytes past the last MiB.")
    args = parser.parse_args()
    write_disk(args.path, args.size_mib, args.seed, args.tail)


if __name__ == "__main__":
    main()
