"""Metrics of the guest-proxy."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from blockferry.transport.expiry import REFUSALS

ACTIONS = ("freeze", "thaw", "snapshot", "delete-snapshot")
OUTCOMES = ("ok", "failed")


class GuestProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.steps = Counter(
            "blockferry_guest_proxy_steps_total",
            "Guest scripts and snapshot commands run, by action and outcome (failed: the"
            " script exited non-zero, timed out or could not be started).",
            ["action", "outcome"],
            registry=registry,
        )
        for action in ACTIONS:
            for outcome in OUTCOMES:
                self.steps.labels(action, outcome)
        self.commands_refused = Counter(
            "blockferry_guest_proxy_commands_refused_total",
            "Commands refused, never run: expired (read after their expiry, as a consumer"
            " group that lost its offsets reads old freezes again) or superseded (sent by an"
            " earlier run of a session an orchestrator carries on).",
            ["reason"],
            registry=registry,
        )
        for reason in REFUSALS:
            self.commands_refused.labels(reason)
        self.auto_thaws = Counter(
            "blockferry_guest_proxy_auto_thaws_total",
            "Guests thawed because their freeze limit expired before the thaw was asked.",
            registry=registry,
        )
        self.frozen = Gauge(
            "blockferry_guest_proxy_frozen_guests",
            "Guests frozen now (between a freeze and its thaw).",
            registry=registry,
        )
