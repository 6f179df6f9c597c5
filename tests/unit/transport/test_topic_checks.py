"""The start-up check of a topic's settings against what blockferry needs of it."""

from __future__ import annotations

import pytest

from blockferry.transport.topics import (
    MAX_RECORD_BYTES,
    Topics,
    TopicSpec,
    TopicState,
    min_isr_for,
    replication_for,
    topic_problems,
)

COMPACTED = TopicSpec("p.sessions", 4, {"cleanup.policy": "compact"})
LARGE = TopicSpec("p.r.chunks", 2, {"max.message.bytes": str(MAX_RECORD_BYTES)})
PLAIN = TopicSpec("p.tasks", 4)


def state(spec: TopicSpec, replication: int, **configs: str) -> TopicState:
    defaults = {
        "cleanup.policy": "delete",
        "min.insync.replicas": str(min_isr_for(replication)),
        "max.message.bytes": "1048588",
    }
    return TopicState(
        spec.name,
        replication,
        {**defaults, **spec.configs, **{k.replace("_", "."): v for k, v in configs.items()}},
    )


@pytest.mark.parametrize(
    ("brokers", "replication", "min_isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)]
)
def test_topics_are_created_with_three_copies_where_there_are_three_brokers(
    brokers: int, replication: int, min_isr: int
) -> None:
    assert replication_for(brokers) == replication
    assert min_isr_for(replication) == min_isr


@pytest.mark.parametrize("brokers", [1, 2, 3])
@pytest.mark.parametrize("spec", [COMPACTED, LARGE, PLAIN])
def test_a_topic_as_created_has_no_problem(spec: TopicSpec, brokers: int) -> None:
    assert topic_problems(spec, state(spec, replication_for(brokers)), brokers) == []


def test_every_topic_of_a_mesh_as_created_has_no_problem() -> None:
    topics = Topics("p")
    for spec in [*topics.shared_specs(), *topics.repository_specs("r", 2, 3600_000)]:
        assert topic_problems(spec, state(spec, 3), 3) == [], spec.name


@pytest.mark.parametrize(
    ("spec", "described", "brokers", "setting", "actual", "required"),
    [
        # the local runner's old three-node mode: min ISR 1 loses acknowledged records
        (PLAIN, state(PLAIN, 3, min_insync_replicas="1"), 3, "min.insync.replicas", "1", "2"),
        # min ISR 3 of 3 copies stops every write while one broker is down
        (PLAIN, state(PLAIN, 3, min_insync_replicas="3"), 3, "min.insync.replicas", "3", "2"),
        (PLAIN, state(PLAIN, 1, min_insync_replicas="2"), 1, "min.insync.replicas", "2", "1"),
        (
            PLAIN,
            state(PLAIN, 1, min_insync_replicas="2"),
            3,
            "replication factor",
            "1",
            "at least 3",
        ),
        (
            COMPACTED,
            state(COMPACTED, 1, cleanup_policy="delete"),
            1,
            "cleanup.policy",
            "delete",
            "compact",
        ),
        (
            COMPACTED,
            state(COMPACTED, 1, cleanup_policy="compact,delete"),
            1,
            "cleanup.policy",
            "compact,delete",
            "compact",
        ),
        (
            LARGE,
            state(LARGE, 1, max_message_bytes="1048588"),
            1,
            "max.message.bytes",
            "1048588",
            f"at least {MAX_RECORD_BYTES}",
        ),
    ],
)
def test_a_wrong_setting_is_named_with_what_it_must_be(
    spec: TopicSpec,
    described: TopicState,
    brokers: int,
    setting: str,
    actual: str,
    required: str,
) -> None:
    (problem,) = topic_problems(spec, described, brokers)
    assert (problem.topic, problem.setting, problem.actual, problem.required) == (
        spec.name,
        setting,
        actual,
        required,
    )
    assert str(problem).startswith(f"topic {spec.name}: {setting} is {actual}, must be ")
    assert "fix: " in str(problem)


def test_more_copies_than_needed_are_fine_and_allow_a_higher_min_isr() -> None:
    assert topic_problems(PLAIN, state(PLAIN, 5, min_insync_replicas="3"), 3) == []


def test_a_broker_down_at_start_up_does_not_make_three_copies_wrong() -> None:
    assert topic_problems(PLAIN, state(PLAIN, 3), 2) == []


def test_settings_not_named_by_the_spec_are_not_checked() -> None:
    described = state(PLAIN, 1, cleanup_policy="compact", max_message_bytes="1000")
    assert topic_problems(PLAIN, described, 1) == []


def test_every_problem_of_a_topic_is_named() -> None:
    described = state(COMPACTED, 1, cleanup_policy="delete", min_insync_replicas="1")
    settings = [p.setting for p in topic_problems(COMPACTED, described, 3)]
    assert settings == ["replication factor", "min.insync.replicas", "cleanup.policy"]
