"""Settings of the target-side pipeline, shared by the target mover and the gateway."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from blockferry.settings import CommonSettings


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
    measure_every_s: float = Field(
        60.0,
        gt=0,
        description="How often each repository's size, free space, quarantined chunks and"
        " locks are measured for the metrics (a listing of its packs, quarantine and locks).",
    )
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
    append_only: bool = Field(
        False,
        description="The storage credentials of this role cannot delete (an immutable"
        " repository): it refuses garbage collection and prune, which `blockferry repo gc"
        " | prune` run with credentials that may, and leaves them what crashed commits"
        " left.",
    )
    repositories: dict[str, str] = Field(
        default_factory=dict,
        description="Repositories this role owns: name -> location (a path, file:///path,"
        " or for the gateway s3://bucket/prefix?endpoint=URL). Empty: for the target"
        " mover, the repository 'default' under the data directory.",
    )
    export_tls_dir: Path | None = Field(
        None,
        description="Certificates for exports of restore points on TCP (blockferry export"
        " --listen): a directory with ca-cert.pem, server-cert.pem and server-key.pem;"
        " clients must present a certificate of that CA. Unset: exports on Unix sockets only.",
    )
    repository_keys_dir: Path | None = Field(
        None,
        description="The directory of the key files of repositories encrypted at rest,"
        " <repository>.key each (blockferry repo init --key-file). Default:"
        " repository-keys/ in the data directory.",
    )


class IngestSettings(CommonSettings):
    """Settings of a role that owns repositories (the target mover, the gateway)."""

    def ingest(self) -> IngestConfig:
        """This role's own section."""
        raise NotImplementedError

    def repositories(self) -> dict[str, str]:
        """Name -> location of every repository this role owns.

        Raises:
            ConfigError: none is configured and the role has no default.
        """
        raise NotImplementedError

    def repository_key_file(self, name: str) -> Path:
        """Where the key file of repository ``name`` is, if it is encrypted."""
        directory = self.ingest().repository_keys_dir or self.data_dir / "repository-keys"
        return directory / f"{name}.key"
