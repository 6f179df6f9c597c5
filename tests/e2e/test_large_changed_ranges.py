"""A changed-ranges map far larger than one record may be on a broker with default
limits: it travels in pages, and the backup reads exactly the blocks it names."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from blockferry.transport.kafka import ensure_topics
from blockferry.transport.topics import Topics, TopicSpec
from tests.e2e.harness import MeshProcesses, make_disk

pytestmark = pytest.mark.e2e

BLOCK = 256 * 1024
DEFAULT_LIMIT = 1048588
"""A broker's default message.max.bytes (and a topic's default max.message.bytes)."""


def create_topics_with_default_limits(bootstrap: str, prefix: str, shards: int) -> None:
    """The mesh's topics, made before any role makes them: every topic the design does
    not give a raised limit gets the broker's default one (the test broker's own
    default is raised for the large topics)."""
    topics = Topics(prefix)
    specs = topics.shared_specs() + topics.repository_specs("default", shards, 6 * 3600 * 1000)
    limited = [
        TopicSpec(s.name, s.partitions, {"max.message.bytes": str(DEFAULT_LIMIT), **s.configs})
        for s in specs
    ]
    asyncio.run(ensure_topics(bootstrap, limited))


def test_a_map_of_200000_ranges_backs_up_exactly_its_blocks_on_default_limits(
    mesh_processes: MeshProcesses, tmp_path: Path
) -> None:
    mesh = mesh_processes
    env = mesh.env
    create_topics_with_default_limits(
        env["BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"], env["BLOCKFERRY_KAFKA__TOPIC_PREFIX"], 2
    )
    mesh.up(shards=2)
    disk = make_disk(tmp_path / "vm.img", 16, seed=21)
    parent = mesh.cli_json("backup", str(disk), "--job", "vm", "--disk", "d0", "--wait")
    assert parent["state"] == "success", parent
    before = disk.read_bytes()

    named, unnamed = [3, 10, 20, 40], 30
    with disk.open("r+b") as f:
        for block in [*named, unnamed]:
            f.seek(block * BLOCK)
            f.write(os.urandom(BLOCK))
    after = disk.read_bytes()
    # 50 000 one-byte ranges in each named block; the unnamed change is not in the map
    ranges = [
        {"offset": block * BLOCK + 5 * i, "length": 1} for block in named for i in range(50_000)
    ]
    text = json.dumps({"since": parent["restore_point"], "ranges": ranges})
    assert len(text) > 5 * DEFAULT_LIMIT, "far beyond what one record may carry"
    map_file = tmp_path / "changes.json"
    map_file.write_text(text)

    backup = mesh.cli_json(
        "backup",
        str(disk),
        "--job",
        "vm",
        "--disk",
        "d0",
        "--changed-ranges",
        str(map_file),
        "--wait",
    )
    assert backup["state"] == "success", backup
    assert (backup["parent"], backup["tracking"]) == (parent["restore_point"], "changed-ranges")
    assert backup["warnings"] == []
    c = backup["counters"]
    assert c["blocks_read"] == len(named), c
    assert c["blocks_skipped"] == c["blocks_total"] - len(named), c

    restored = tmp_path / "restored.img"
    mesh.cli_json("restore", backup["restore_point"], "--to", str(restored))
    expected = bytearray(before)
    for block in named:  # exactly the named blocks: the unnamed change is the operator's word
        expected[block * BLOCK : (block + 1) * BLOCK] = after[block * BLOCK : (block + 1) * BLOCK]
    assert restored.read_bytes() == bytes(expected)
