"""Kafka being unavailable is waited out; every other Kafka error is raised."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    UnknownTopicOrPartitionError,
)

from blockferry.core.errors import TransportError
from blockferry.transport.kafka import waiting


async def test_unavailability_is_waited_out() -> None:
    failures = [KafkaConnectionError(), KafkaTimeoutError(), NotEnoughReplicasError()]

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert await waiting("producing", call) == "done"
    assert failures == []


@pytest.mark.parametrize("error", [MessageSizeTooLargeError, UnknownTopicOrPartitionError])
async def test_other_errors_are_raised_saying_what_failed(error: type[Exception]) -> None:
    async def call() -> None:
        raise error()

    with pytest.raises(TransportError, match=r"^producing X to t: ") as raised:
        await waiting("producing X to t", call)
    assert isinstance(raised.value.__cause__, error)
