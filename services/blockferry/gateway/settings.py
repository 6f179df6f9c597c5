"""Settings of the gateway."""

from __future__ import annotations

from blockferry.core.errors import ConfigError
from blockferry.ingest.config import IngestConfig, IngestSettings


class GatewaySettings(IngestSettings):
    gateway: IngestConfig = IngestConfig()

    def ingest(self) -> IngestConfig:
        return self.gateway

    def repositories(self) -> dict[str, str]:
        if not self.gateway.repositories:
            raise ConfigError(
                "the gateway serves no repository: set BLOCKFERRY_GATEWAY__REPOSITORIES to"
                ' {"name": "s3://bucket/prefix?endpoint=URL"} (or a mounted share\'s path)'
            )
        return self.gateway.repositories
