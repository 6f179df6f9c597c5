"""The bandwidth limit of the link between two sites.

MirrorMaker 2 has no rate setting of its own, so the limit is a broker quota on its
principal, set on the cluster it reaches over the link (the site it does not run at):
what it fetches there is what leaves that site (``consumer_byte_rate``), what it
produces there is what arrives (``producer_byte_rate``). Kafka enforces quotas per
broker, so each broker gets its share of the link's rate."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from blockferry.core.errors import ConfigError


@dataclass(frozen=True)
class LinkLimit:
    """The link's rates, in bytes a second, over the remote cluster's ``brokers``."""

    leaving: int
    arriving: int
    brokers: int = 1

    def __post_init__(self) -> None:
        if self.brokers < 1:
            raise ConfigError(f"a cluster has at least one broker, not {self.brokers}")
        if self.leaving < self.brokers or self.arriving < self.brokers:
            raise ConfigError(
                f"a link rate must be at least one byte a second per broker ({self.brokers})"
            )

    def per_broker(self) -> dict[str, int]:
        """The quota values of each broker, under their Kafka names."""
        return {
            "consumer_byte_rate": math.floor(self.leaving / self.brokers),
            "producer_byte_rate": math.floor(self.arriving / self.brokers),
        }


def user_of(principal: str) -> str:
    """The quota entity of a ``User:NAME`` principal: ``NAME``."""
    kind, _, name = principal.partition(":")
    if kind != "User" or not name:
        raise ConfigError(f"quotas are set on users: {principal!r} is not User:NAME")
    return name


def quota_command(principal: str, limit: LinkLimit) -> str:
    """The ``kafka-configs.sh`` command line that sets ``limit`` on ``principal``; it
    leaves the broker and the admin's client settings to the shell variables ``KAFKA``
    and ``ADMIN_CONFIG``, as :func:`blockferry.transport.acls.acl_commands` does."""
    values = ",".join(f"{name}={value}" for name, value in limit.per_broker().items())
    return (
        'kafka-configs.sh --bootstrap-server "$KAFKA" --command-config "$ADMIN_CONFIG"'
        f" --alter --entity-type users --entity-name {user_of(principal)}"
        f" --add-config {values}"
    )


def quota_document(principal: str, limit: LinkLimit) -> str:
    """``limit`` on ``principal`` in a KafkaUser's ``spec.quotas`` layout (Strimzi)."""
    quotas = limit.per_broker()
    return json.dumps(
        {
            user_of(principal): {
                "quotas": {
                    "consumerByteRate": quotas["consumer_byte_rate"],
                    "producerByteRate": quotas["producer_byte_rate"],
                }
            }
        },
        indent=2,
    )
