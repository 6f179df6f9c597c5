"""The link's bandwidth limit: MirrorMaker's principal's quotas, shared over the brokers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from blockferry.cli import main
from blockferry.core.errors import ConfigError
from blockferry.transport.link_limit import LinkLimit, quota_command, quota_document, user_of


def test_each_broker_takes_its_share_of_each_way() -> None:
    limit = LinkLimit(leaving=10_000_000, arriving=1_000_000, brokers=3)
    assert limit.per_broker() == {"consumer_byte_rate": 3_333_333, "producer_byte_rate": 333_333}


@pytest.mark.parametrize(
    ("leaving", "arriving", "brokers"), [(0, 10, 1), (10, 0, 1), (2, 10, 3), (10, 10, 0)]
)
def test_a_rate_below_a_byte_a_second_per_broker_is_refused(
    leaving: int, arriving: int, brokers: int
) -> None:
    with pytest.raises(ConfigError):
        LinkLimit(leaving, arriving, brokers)


def test_quotas_are_set_on_the_user_of_a_principal() -> None:
    assert user_of("User:blockferry-mirror-maker") == "blockferry-mirror-maker"
    assert user_of("User:CN=mm2,O=site") == "CN=mm2,O=site"
    for principal in ("Group:mm2", "User:", "mm2"):
        with pytest.raises(ConfigError, match="quotas are set on users"):
            user_of(principal)


def test_the_command_sets_both_quotas_on_mirror_makers_user() -> None:
    line = quota_command("User:blockferry-mirror-maker", LinkLimit(2048, 1024))
    assert line == (
        'kafka-configs.sh --bootstrap-server "$KAFKA" --command-config "$ADMIN_CONFIG"'
        " --alter --entity-type users --entity-name blockferry-mirror-maker"
        " --add-config consumer_byte_rate=2048,producer_byte_rate=1024"
    )


def test_the_document_is_a_kafka_users_quotas() -> None:
    document = json.loads(quota_document("User:mm2", LinkLimit(2048, 1024, brokers=2)))
    assert document == {"mm2": {"quotas": {"consumerByteRate": 1024, "producerByteRate": 512}}}


def test_the_cli_reads_rates_as_sizes_and_back_defaults_to_the_rate() -> None:
    result = CliRunner().invoke(main, ["link-limit", "--rate", "1MiB", "--brokers", "2"])
    assert result.exit_code == 0, result.output
    assert "consumer_byte_rate=524288,producer_byte_rate=524288" in result.output
    result = CliRunner().invoke(
        main, ["link-limit", "--rate", "1MB", "--back-rate", "1KB", "--format", "json"]
    )
    assert json.loads(result.output)["blockferry-mirror-maker"]["quotas"] == {
        "consumerByteRate": 1_000_000,
        "producerByteRate": 1_000,
    }


def test_the_cli_refuses_what_is_not_a_rate() -> None:
    result = CliRunner().invoke(main, ["link-limit", "--rate", "fast"])
    assert result.exit_code != 0
    assert "not a size a second" in result.output
