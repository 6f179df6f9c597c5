"""The target mover and the gateway are one pipeline serving different locations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from blockferry.core.errors import ConfigError
from blockferry.gateway.service import Gateway
from blockferry.gateway.settings import GatewaySettings
from blockferry.target_mover.service import TargetMover
from blockferry.target_mover.settings import TargetMoverSettings


async def test_the_target_mover_leaves_buckets_to_the_gateway() -> None:
    settings = TargetMoverSettings(
        target_mover={"repositories": {"offsite": "s3://backups/site-a"}}  # type: ignore[arg-type]
    )
    role = TargetMover(settings, CollectorRegistry())
    with pytest.raises(ConfigError, match=r"offsite .*the target mover serves file .*gateway"):
        await role.start()


async def test_a_gateway_without_repositories_says_how_to_name_them() -> None:
    role = Gateway(GatewaySettings(), CollectorRegistry())
    with pytest.raises(ConfigError, match="BLOCKFERRY_GATEWAY__REPOSITORIES"):
        await role.start()


async def test_an_unknown_scheme_is_refused() -> None:
    settings = GatewaySettings(gateway={"repositories": {"r": "ftp://host/x"}})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown scheme 'ftp'"):
        await Gateway(settings, CollectorRegistry()).start()
