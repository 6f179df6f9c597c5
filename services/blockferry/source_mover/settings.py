"""Settings of the source mover."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from blockferry.settings import CommonSettings


class SourceMoverConfig(BaseModel):
    workers: int = Field(2, ge=1, le=64, description="Threads reading, digesting, compressing.")
    in_flight: int = Field(
        32, ge=1, description="Blocks in a window: read, looked up and compressed together."
    )
    max_tasks: int = Field(2, ge=1, description="Tasks one mover runs at the same time.")
    progress_interval_s: float = Field(2.0, gt=0, description="How often a task reports.")
    extents_per_record: int = Field(1024, ge=1, description="Block entries per Extents record.")
    stored_wait_s: float = Field(
        600.0, gt=0, description="How long to wait for the target to store a disk's blocks."
    )
    resend_attempts: int = Field(3, ge=0, description="Rounds of resending missing blocks.")
    global_dedupe: bool = Field(
        True, description="Ask the dedupe index before sending a block new to the session."
    )
    lookup_timeout_s: float = Field(
        1.0, gt=0, description="How long to wait for the dedupe index before sending anyway."
    )
    lookup_retry_s: float = Field(
        30.0, ge=0, description="How long a shard that timed out is not asked again."
    )
    read_limit_mib_s: float = Field(
        0.0, ge=0, description="Most MiB a task reads from its source a second; 0 is no limit."
    )
    dedupe_keys_dir: Path | None = Field(
        None,
        description="The directory of the repositories' dedupe keys, <repository>.key each"
        " (blockferry repo export-dedupe-key). Default: keys/ in the data directory.",
    )
    write_limit_mib_s: float = Field(
        0.0,
        ge=0,
        description="Most MiB a restore task writes to its destination a second; 0 is no limit.",
    )


class SourceMoverSettings(CommonSettings):
    source_mover: SourceMoverConfig = SourceMoverConfig()

    def dedupe_keys_dir(self) -> Path:
        """Where the repositories' dedupe key files are."""
        return self.source_mover.dedupe_keys_dir or self.data_dir / "keys"
