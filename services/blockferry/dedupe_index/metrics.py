"""Metrics of the dedupe index."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

LOOKUP_OUTCOMES = ("answered", "late", "not-ready")


class DedupeIndexMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "blockferry_dedupe_index_lookups_total",
            "Lookup requests: answered; late (the asker had stopped waiting); not-ready"
            " (the shard was still catching up with its changelog when the asker gave up).",
            ["outcome"],
            registry=registry,
        )
        self.digests = Counter(
            "blockferry_dedupe_index_digests_total",
            "Digests asked about, and how many of them were known.",
            ["kind"],
            registry=registry,
        )
        self.changelog_records = Counter(
            "blockferry_dedupe_index_changelog_records_total",
            "Index changelog records applied to the store.",
            registry=registry,
        )
        self.shards = Gauge(
            "blockferry_dedupe_index_shards", "Shards this instance answers for.", registry=registry
        )
        for outcome in LOOKUP_OUTCOMES:
            self.lookups.labels(outcome)
        for kind in ("asked", "known"):
            self.digests.labels(kind)
