"""At start-up a role checks the topics it uses and refuses a wrong one by name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from blockferry.core.errors import TopicConfigError
from blockferry.mesh import Mesh, RepositoryDirectory
from blockferry.settings import CommonSettings, KafkaSettings
from blockferry.transport.kafka import ensure_topics
from blockferry.transport.records import RepositoryInfo
from blockferry.transport.topics import MAX_RECORD_BYTES, TopicSpec

pytestmark = pytest.mark.kafka


async def create(bootstrap: str, name: str, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topic = NewTopic(
            name, 1, 1, topic_configs={k.replace("_", "."): v for k, v in configs.items()}
        )
        response = (await admin.create_topics([topic])).to_object()
        assert [t["error_code"] for t in response["topic_errors"]] == [0], response
    finally:
        await admin.close()


def mesh(bootstrap: str, prefix: str, role: str = "orchestrator") -> Mesh:
    settings = CommonSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix))
    return Mesh(settings, role)


async def test_topics_created_and_found_again_pass_the_check(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    specs = [
        TopicSpec(f"{topic_prefix}.compacted", 2, {"cleanup.policy": "compact"}),
        TopicSpec(f"{topic_prefix}.large", 1, {"max.message.bytes": str(MAX_RECORD_BYTES)}),
    ]
    await ensure_topics(kafka_bootstrap, specs)
    await ensure_topics(kafka_bootstrap, specs)  # existing ones are checked the same


async def test_a_compacted_topic_created_with_delete_is_refused_by_name(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await create(kafka_bootstrap, f"{topic_prefix}.sessions", cleanup_policy="delete")
    with pytest.raises(TopicConfigError) as raised:
        await mesh(kafka_bootstrap, topic_prefix).start()
    assert (
        f"topic {topic_prefix}.sessions: cleanup.policy is delete, must be compact"
        f" (fix: kafka-configs.sh --bootstrap-server BROKER --alter --entity-type topics"
        f" --entity-name {topic_prefix}.sessions --add-config cleanup.policy=compact)"
    ) in str(raised.value)


async def test_a_large_record_topic_with_a_small_record_limit_is_refused(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await create(kafka_bootstrap, f"{topic_prefix}.dead-letter", max_message_bytes="1048576")
    with pytest.raises(TopicConfigError) as raised:
        await mesh(kafka_bootstrap, topic_prefix).start()
    assert (
        f"topic {topic_prefix}.dead-letter: max.message.bytes is 1048576,"
        f" must be at least {MAX_RECORD_BYTES}"
    ) in str(raised.value)


def test_a_role_process_with_a_wrong_topic_exits_at_once_naming_it(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: object
) -> None:
    import asyncio

    asyncio.run(create(kafka_bootstrap, f"{topic_prefix}.jobs", cleanup_policy="delete"))
    env = {
        **os.environ,
        "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "BLOCKFERRY_KAFKA__TOPIC_PREFIX": topic_prefix,
        "BLOCKFERRY_DATA_DIR": str(tmp_path),
        "BLOCKFERRY_HTTP__PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "blockferry.cli", "run", "orchestrator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # no retries: a wrong topic is not waited for
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode != 0
    assert f"topic {topic_prefix}.jobs: cleanup.policy is delete, must be compact" in result.stderr


async def test_a_role_makes_the_topics_it_uses_of_a_repository_announced_from_elsewhere(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """On two sites the owner announces a repository from the other cluster (the
    announcement mirrored here): a source mover learning of it makes the repository's
    topics it uses on its own cluster, and no other."""
    source_mover = mesh(kafka_bootstrap, topic_prefix, "source-mover")
    await source_mover.start()
    info = RepositoryInfo(
        name="far", repository_id="id", block_size=4096, shard_count=3, owner="target-mover-b"
    )
    try:
        await source_mover.producer.send_and_wait(  # as MirrorMaker writes it
            source_mover.topics.repositories, info, key=b"far"
        )
        directory = RepositoryDirectory(source_mover)
        await directory.start()
        running = asyncio.create_task(directory.run())
        try:
            assert await directory.get("far", timeout=30) == info
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await directory.stop()
    finally:
        await source_mover.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        made = {t for t in await admin.list_topics() if t.startswith(f"{topic_prefix}.far.")}
        described = await admin.describe_topics(sorted(made))
    finally:
        await admin.close()
    kinds = ("chunks", "extents", "lookups", "lookup-replies", "requests", "replies", "restore")
    assert made == {f"{topic_prefix}.far.{kind}" for kind in kinds}
    chunks = next(t for t in described if t["topic"] == f"{topic_prefix}.far.chunks")
    assert len(chunks["partitions"]) == 3, "a partition per shard"
