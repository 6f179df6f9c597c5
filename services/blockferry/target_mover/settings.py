"""Settings of the target mover."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blockferry.ingest.config import IngestConfig
from blockferry.settings import CommonSettings


class TargetMoverConfig(IngestConfig):
    repositories: dict[str, Path] = Field(
        default_factory=dict,
        description="Repositories this mover owns, name -> directly attached path."
        " Empty: the repository 'default' under the data directory.",
    )


class TargetMoverSettings(CommonSettings):
    target_mover: TargetMoverConfig = TargetMoverConfig()

    def repositories(self) -> dict[str, Path]:
        return self.target_mover.repositories or {"default": self.data_dir / "repository"}
