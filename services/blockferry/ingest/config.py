"""Settings of the target-side pipeline, shared by the target mover and the gateway."""

from __future__ import annotations

from pydantic import BaseModel, Field


class IngestConfig(BaseModel):
    pack_size: int = Field(
        32 * 1024 * 1024, ge=1024 * 1024, description="Seal a pack once it holds this many bytes."
    )
    idle_seal_s: float = Field(
        1.0, gt=0, description="Seal an open pack when its partition was idle this long."
    )
    stored_wait_s: float = Field(
        120.0, gt=0, description="How long an end marker waits for its blocks to be durable."
    )
    workers: int = Field(2, ge=1, le=64, description="Threads checking chunks and writing packs.")
    maintenance_workers: int = Field(
        1,
        ge=1,
        le=8,
        description="Threads for garbage collection, prune and verify, apart from the"
        " ingestion threads so that maintenance never starves a backup.",
    )
    lock_wait_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="How long a disk's end or a commit waits for a garbage collection or"
        " prune that holds the repository's exclusive lock.",
    )
    gc_grace: int = Field(
        1,
        ge=0,
        description="Garbage collection leaves whole the packs of this many repository"
        " generations before its own (each GC and each backup's start begins one), besides"
        " those sealed since the oldest running backup began; 0: only those.",
    )
