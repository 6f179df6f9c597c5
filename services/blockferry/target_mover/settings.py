"""Settings of the target mover."""

from __future__ import annotations

from blockferry.ingest.config import IngestConfig, IngestSettings


class TargetMoverSettings(IngestSettings):
    target_mover: IngestConfig = IngestConfig()

    def ingest(self) -> IngestConfig:
        return self.target_mover

    def repositories(self) -> dict[str, str]:
        return self.target_mover.repositories or {"default": str(self.data_dir / "repository")}
