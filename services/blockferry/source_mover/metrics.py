"""Metrics of the source mover."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from blockferry.transport.expiry import REFUSALS

BLOCK_OUTCOMES = ("read", "zero", "deduplicated", "sent")
BYTE_KINDS = ("read", "sent", "sent_plain", "restored")


class SourceMoverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocks = Counter(
            "blockferry_source_mover_blocks_total",
            "Blocks by what happened to them: read, zero, deduplicated, sent.",
            ["outcome"],
            registry=registry,
        )
        self.bytes = Counter(
            "blockferry_source_mover_bytes_total",
            "Bytes read from sources (read), sent as chunks after compression (sent) and"
            " before it (sent_plain), restored.",
            ["kind"],
            registry=registry,
        )
        self.tasks_running = Gauge(
            "blockferry_source_mover_tasks_running", "Tasks this mover runs now.", registry=registry
        )
        self.tasks = Counter(
            "blockferry_source_mover_tasks_total",
            "Tasks finished, by kind and result.",
            ["kind", "result"],
            registry=registry,
        )
        self.lookups = Counter(
            "blockferry_source_mover_lookups_total",
            "Dedupe-index lookups (one per shard asked): answered, or timed-out (the"
            " shard's chunks were sent without an answer).",
            ["outcome"],
            registry=registry,
        )
        self.tasks_refused = Counter(
            "blockferry_source_mover_tasks_refused_total",
            "Tasks not started: expired (read after their expiry: offered again since, or"
            " read again by a consumer group that lost its offsets) or superseded (sent by an"
            " earlier run of a session an orchestrator carries on).",
            ["reason"],
            registry=registry,
        )
        for reason in REFUSALS:
            self.tasks_refused.labels(reason)
        for outcome in ("answered", "timed-out"):
            self.lookups.labels(outcome)
        for outcome in BLOCK_OUTCOMES:
            self.blocks.labels(outcome)
        for kind in BYTE_KINDS:
            self.bytes.labels(kind)
        for kind in ("backup", "restore"):
            for result in ("done", "failed", "cancelled"):
                self.tasks.labels(kind, result)
