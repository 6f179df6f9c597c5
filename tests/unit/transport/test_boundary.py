"""The transport package is the only one that speaks to a Kafka client: roles see its
types (records, partitions, a rebalance listener), so a second client can carry some
topics, and the next issue's security settings live in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import blockferry

PACKAGE = Path(blockferry.__file__).parent
CLIENTS = ("aiokafka", "confluent_kafka", "kafka")


def kafka_imports(path: Path) -> list[str]:
    """The Kafka client modules ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in CLIENTS]
    return found


def test_only_the_transport_package_imports_a_kafka_client() -> None:
    outside = {
        str(path.relative_to(PACKAGE)): imports
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "transport" and (imports := kafka_imports(path))
    }
    assert outside == {}


def test_the_check_sees_an_import_of_the_client(tmp_path: Path) -> None:
    module = tmp_path / "role.py"
    module.write_text("from aiokafka import TopicPartition\nimport confluent_kafka.admin\n")
    assert kafka_imports(module) == ["aiokafka", "confluent_kafka.admin"]
