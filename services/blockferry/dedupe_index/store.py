"""The digest → location map of one repository's shards, kept in LMDB.

LMDB because the map is read far more than written and must survive a crash
without a repair step: readers go through a memory map without locks, a write
transaction is copy-on-write and either lands whole or not at all, and there is
no compaction to tune. Each shard is a named database holding digest → location,
and the ``offsets`` database holds, per shard, the next changelog offset to read;
both change in the same transaction, so the store never claims entries it lacks.
"""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb

MAX_SHARDS = 1024
_OFFSETS = b"offsets"


class ShardStore:
    """The shards of one repository this instance holds or held (kept for a quick
    catch-up when a shard comes back after a rebalance)."""

    def __init__(self, path: Path, map_size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=MAX_SHARDS + 1)
        self._offsets = self._env.open_db(_OFFSETS)
        self._shards: dict[int, lmdb._Database] = {}

    def close(self) -> None:
        self._env.close()

    def _db(self, shard: int) -> lmdb._Database:
        db = self._shards.get(shard)
        if db is None:
            db = self._shards[shard] = self._env.open_db(f"shard-{shard}".encode())
        return db

    def next_offset(self, shard: int) -> int | None:
        """The changelog offset to read next for ``shard``; None if never read."""
        with self._env.begin(db=self._offsets) as txn:
            raw = txn.get(_shard_key(shard))
        return None if raw is None else int(struct.unpack(">q", raw)[0])

    def apply(
        self, shard: int, changes: list[tuple[bytes, bytes | None]], next_offset: int
    ) -> None:
        """Store ``changes`` (digest → location; None removes it) and the offset after them."""
        db = self._db(shard)
        with self._env.begin(write=True) as txn:
            for digest, location in changes:
                if location is None:
                    txn.delete(digest, db=db)
                else:
                    txn.put(digest, location, db=db)
            txn.put(_shard_key(shard), struct.pack(">q", next_offset), db=self._offsets)

    def clear(self, shard: int) -> None:
        """Forget ``shard`` (its changelog is to be read again from the start)."""
        db = self._db(shard)
        with self._env.begin(write=True) as txn:
            txn.drop(db, delete=False)
            txn.delete(_shard_key(shard), db=self._offsets)

    def known(self, shard: int, digests: list[bytes]) -> list[bool]:
        """Whether each of ``digests`` is stored."""
        db = self._db(shard)
        with self._env.begin(db=db) as txn:
            return [txn.get(d) is not None for d in digests]

    def entries(self, shard: int) -> int:
        db = self._db(shard)
        with self._env.begin() as txn:
            count: int = txn.stat(db)["entries"]
            return count


def _shard_key(shard: int) -> bytes:
    return struct.pack(">I", shard)
