"""Metrics of the target-side pipeline; the role's name is their prefix."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from blockferry.transport.expiry import REFUSALS

CHUNK_OUTCOMES = ("stored", "duplicate", "rejected")


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry, role: str) -> None:
        prefix = f"blockferry_{role.replace('-', '_')}"
        self.chunks = Counter(
            f"{prefix}_chunks_total",
            "Chunks received, by outcome: stored, duplicate (already stored), rejected.",
            ["repository", "outcome"],
            registry=registry,
        )
        self.bytes_written = Counter(
            f"{prefix}_bytes_written_total",
            "Stored chunk bytes written to packs.",
            ["repository"],
            registry=registry,
        )
        self.packs_sealed = Counter(
            f"{prefix}_packs_sealed_total", "Packs sealed.", ["repository"], registry=registry
        )
        self.seal_seconds = Histogram(
            f"{prefix}_pack_seal_seconds",
            "Time to seal a pack (fsync, rename, index file).",
            ["repository"],
            registry=registry,
        )
        self.disks_stored = Counter(
            f"{prefix}_disks_stored_total",
            "Disks whose fixed index was written.",
            ["repository"],
            registry=registry,
        )
        self.bytes_restored = Counter(
            f"{prefix}_bytes_restored_total",
            "Stored bytes read and streamed for restores.",
            ["repository"],
            registry=registry,
        )
        self.commands_refused = Counter(
            f"{prefix}_commands_refused_total",
            "Commands and requests refused, never run: expired (read after their expiry, as"
            " a consumer group that lost its offsets reads old ones again) or superseded"
            " (sent by an earlier run of a session an orchestrator carries on).",
            ["repository", "reason"],
            registry=registry,
        )
        self.unreadable_metadata = Gauge(
            f"{prefix}_unreadable_metadata",
            "1 when start-up found a restore point, fixed index or staged fixed index it"
            " cannot read (GC and prune refuse to run until it is repaired or set aside).",
            ["repository"],
            registry=registry,
        )

        self.size = Gauge(
            f"{prefix}_repository_size_bytes",
            "Bytes of the repository's sealed packs (measured every minute).",
            ["repository"],
            registry=registry,
        )
        self.free = Gauge(
            f"{prefix}_repository_free_bytes",
            "Free bytes of the file system a local repository lives on (none for a"
            " bucket or a share).",
            ["repository"],
            registry=registry,
        )
        self.filesystem = Gauge(
            f"{prefix}_repository_filesystem_size_bytes",
            "Size of the file system a local repository lives on.",
            ["repository"],
            registry=registry,
        )
        self.quarantined = Gauge(
            f"{prefix}_quarantined_chunks",
            "Chunks set aside as damaged (quarantine/): the next backup that reads their"
            " blocks sends them again; until then restore points naming them are damaged.",
            ["repository"],
            registry=registry,
        )
        self.oldest_lock = Gauge(
            f"{prefix}_oldest_lock_age_seconds",
            "How long the oldest lock on the repository has been held (0: none).",
            ["repository"],
            registry=registry,
        )
        self.verifies = Counter(
            f"{prefix}_verifies_total",
            "Verifications run, by result: ok, or damaged (damage found).",
            ["repository", "result"],
            registry=registry,
        )
        self.verify_damage = Counter(
            f"{prefix}_verify_damage_total",
            "Damage found by verification: chunks, indexes or restore points unreadable or wrong.",
            ["repository"],
            registry=registry,
        )

    def for_repository(self, repository: str) -> None:
        """Pre-set the label values of one repository."""
        for outcome in CHUNK_OUTCOMES:
            self.chunks.labels(repository, outcome)
        for metric in (
            self.bytes_written,
            self.packs_sealed,
            self.disks_stored,
            self.bytes_restored,
            self.unreadable_metadata,
            self.verify_damage,
        ):
            metric.labels(repository)
        for result in ("ok", "damaged"):
            self.verifies.labels(repository, result)
        for reason in REFUSALS:
            self.commands_refused.labels(repository, reason)
