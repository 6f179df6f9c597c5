"""Settings of the dedupe index."""

from __future__ import annotations

from pydantic import BaseModel, Field

from blockferry.settings import CommonSettings


class DedupeIndexConfig(BaseModel):
    store_map_size_gib: int = Field(
        64,
        ge=1,
        description="Most GiB a repository's store may grow to (LMDB reserves the address"
        " space, not the disk); about 100 bytes an entry.",
    )


class DedupeIndexSettings(CommonSettings):
    """Each repository's store is ``<data_dir>/dedupe-index/<repository>``. Instances on
    one host may share it (LMDB serialises writers across processes); an instance
    with its own disk rebuilds its shards from the changelog on first assignment."""

    dedupe_index: DedupeIndexConfig = DedupeIndexConfig()
