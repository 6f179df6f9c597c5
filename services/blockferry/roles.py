"""The table of roles, sorted, and what each needs to run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from blockferry.dedupe_index.service import DedupeIndex
from blockferry.dedupe_index.settings import DedupeIndexSettings
from blockferry.gateway.service import Gateway
from blockferry.gateway.settings import GatewaySettings
from blockferry.guest_proxy.service import GuestProxy
from blockferry.guest_proxy.settings import GuestProxySettings
from blockferry.orchestrator.service import Orchestrator
from blockferry.orchestrator.settings import OrchestratorSettings
from blockferry.settings import CommonSettings
from blockferry.source_mover.service import SourceMover
from blockferry.source_mover.settings import SourceMoverSettings
from blockferry.target_mover.service import TargetMover
from blockferry.target_mover.settings import TargetMoverSettings


class Role(Protocol):
    """A role is started, run until cancelled, then stopped."""

    name: str

    @property
    def ready(self) -> bool:
        """Whether the role does its work now (served on /readyz)."""
        ...

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class RoleSpec:
    settings: type[CommonSettings]
    build: Callable[[Any, CollectorRegistry], Role]


ROLES: dict[str, RoleSpec] = {
    "dedupe-index": RoleSpec(DedupeIndexSettings, DedupeIndex),
    "gateway": RoleSpec(GatewaySettings, Gateway),
    "guest-proxy": RoleSpec(GuestProxySettings, GuestProxy),
    "orchestrator": RoleSpec(OrchestratorSettings, Orchestrator),
    "source-mover": RoleSpec(SourceMoverSettings, SourceMover),
    "target-mover": RoleSpec(TargetMoverSettings, TargetMover),
}
"""Roles in the order a process starts them when it runs several (owners first is
not needed: every role waits for what it needs on Kafka)."""


def resolve(names: tuple[str, ...]) -> list[str]:
    """Role names to run; ``all`` means every role."""
    if "all" in names:
        return ["target-mover", "dedupe-index", "source-mover", "guest-proxy", "orchestrator"]
    unknown = [n for n in names if n not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {', '.join(unknown)}: use {', '.join(ROLES)} or all")
    return list(dict.fromkeys(names))
