"""The table of topics: every topic the mesh creates is in it, each has one kind of
producer, and the README shows it as it is."""

from __future__ import annotations

from pathlib import Path

from blockferry.transport.topics import EVERY_ROLE, FLOWS, OWNERS, Topics, flows_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_topic_of_the_mesh_has_its_flow_and_no_flow_is_unused() -> None:
    topics = Topics("p")
    specs = topics.shared_specs() + topics.repository_specs("r", 2, 1000)
    flows = [topics.flow(spec.name) for spec in specs]
    assert None not in flows, [s.name for s, f in zip(specs, flows, strict=True) if f is None]
    assert sorted(f.topic for f in flows if f) == sorted(f.topic for f in FLOWS)


def test_each_topic_has_one_kind_of_producer() -> None:
    """The target mover and the gateway are one kind: the owner of a repository."""
    shared = [f.topic for f in FLOWS if len(f.producers) != 1 and f.producers != OWNERS]
    assert shared == ["dead-letter"]
    assert next(f for f in FLOWS if f.topic == "dead-letter").producers == EVERY_ROLE


def test_a_repository_named_like_a_topic_is_still_its_repository() -> None:
    topics = Topics("p")
    assert topics.flow("p.tasks.replies") == topics.flow(topics.replies("r"))
    assert topics.flow("p.r.lookup-replies") != topics.flow("p.r.replies")
    assert topics.flow("q.tasks") is None
    assert topics.flow("p.unknown") is None


def test_the_readme_shows_the_table() -> None:
    assert flows_table() in README.read_text()
