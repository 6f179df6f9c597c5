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
    repository_keys_dir: Path | None = Field(
        None,
        description="The directory of the key files of repositories encrypted at rest,"
        " <repository>.key each (blockferry repo init --key-file). Default:"
        " repository-keys/ in the data directory.",
    )


class TargetMoverSettings(CommonSettings):
    target_mover: TargetMoverConfig = TargetMoverConfig()

    def repositories(self) -> dict[str, Path]:
        return self.target_mover.repositories or {"default": self.data_dir / "repository"}

    def repository_key_file(self, name: str) -> Path:
        """Where the key file of repository ``name`` is, if it is encrypted."""
        directory = self.target_mover.repository_keys_dir or self.data_dir / "repository-keys"
        return directory / f"{name}.key"
