"""The names of every series the roles serve, from their metric classes: what a
dashboard's query or an alert's expression may name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from blockferry.dedupe_index.metrics import DedupeIndexMetrics
from blockferry.guest_proxy.metrics import GuestProxyMetrics
from blockferry.ingest.metrics import IngestMetrics
from blockferry.orchestrator.metrics import OrchestratorMetrics
from blockferry.repository.storage_views import StorageMetrics
from blockferry.source_mover.metrics import SourceMoverMetrics
from blockferry.transport.kafka_watch import KafkaWatch, Offsets
from blockferry.transport.link import LinkWatch

SCRAPE_SERIES = {"up"}
"""What Prometheus adds to every target."""


def exported_metric_names() -> set[str]:
    registry = CollectorRegistry()
    OrchestratorMetrics(registry)
    SourceMoverMetrics(registry)
    DedupeIndexMetrics(registry)
    GuestProxyMetrics(registry)
    for owner in ("target-mover", "gateway"):
        IngestMetrics(registry, owner)
        StorageMetrics(registry, owner)
    LinkWatch("127.0.0.1:9", None, registry)
    watch = KafkaWatch("127.0.0.1:9", None, "bf", "bf.dead-letter", registry)
    watch._last = Offsets(lag={("g", "t"): 0}, dead_letters=0)
    names = set(SCRAPE_SERIES)
    for family in registry.collect():
        names.add(family.name)
        kinds = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + suffix for suffix in kinds.get(family.type, ()))
    return names
