"""Two sites: each topic produced on one, mirrored at most one way, and the lines of
MirrorMaker 2's configuration that say so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from blockferry.core.errors import ConfigError
from blockferry.transport.sites import (
    Placement,
    mirror_properties,
    place_repositories,
    sites_table,
)
from blockferry.transport.topics import FLOWS, Topics

ON_SITE = ("orchestrator", "guest-proxy", "source-mover", "dedupe-index")


def _placement(offsite: tuple[str, ...] = ("target-mover",)) -> Placement:
    return Placement({"onsite": ON_SITE, "offsite": offsite})


def _ways(placement: Placement) -> dict[str, tuple[str, str]]:
    return {m.flow.topic: (m.source, m.target) for m in placement.mirrors()}


def test_the_data_crosses_to_the_repository_and_the_index_comes_back() -> None:
    ways = _ways(_placement())
    out, back = ("onsite", "offsite"), ("offsite", "onsite")
    assert ways == {
        "<repo>.chunks": out,
        "<repo>.extents": out,
        "<repo>.commands": out,
        "<repo>.requests": out,
        "jobs": out,
        "sessions": out,
        "session-events": out,
        "repositories": back,
        "<repo>.index": back,
        "<repo>.replies": back,
        "<repo>.restore": back,
    }
    # the dedupe index answers on-site: lookups never cross
    assert "<repo>.lookups" not in ways and "<repo>.lookup-replies" not in ways


def test_a_topic_is_mirrored_at_most_one_way_and_dead_letters_stay_home() -> None:
    for offsite in (("target-mover",), ("gateway", "dedupe-index"), ("orchestrator", "gateway")):
        onsite = tuple(r for r in ON_SITE if r not in offsite)
        crossing = [
            m.flow.topic for m in Placement({"onsite": onsite, "offsite": offsite}).mirrors()
        ]
        assert len(crossing) == len(set(crossing))
        assert "dead-letter" not in crossing


def test_the_orchestrators_state_goes_off_site_even_with_nobody_reading_it_there() -> None:
    ways = _ways(_placement())
    assert {topic for topic, way in ways.items() if way == ("onsite", "offsite")} >= {
        "jobs",
        "sessions",
        "session-events",
    }


def test_owners_on_both_sites_need_their_repositories_named() -> None:
    sites = {"onsite": (*ON_SITE, "gateway"), "offsite": ("target-mover",)}
    with pytest.raises(ConfigError, match="name the repositories"):
        Placement(sites)
    with pytest.raises(ConfigError, match="served by the target mover and the gateway"):
        place_repositories(sites, ["r"], ["r"])
    with pytest.raises(ConfigError, match="where no owner runs"):
        Placement({"onsite": ON_SITE, "offsite": ("target-mover",)}, {"r": "onsite"})


def test_a_repository_on_each_site_crosses_only_with_its_own_topics() -> None:
    """The gateway on-site serves ``local``, the target mover off-site ``remote``: a
    copy from one to the other sends only ``remote``'s chunks over the link."""
    placement = place_repositories(
        {"onsite": (*ON_SITE, "gateway"), "offsite": ("target-mover",)}, ["remote"], ["local"]
    )
    ways = {(m.flow.topic, m.repository): (m.source, m.target) for m in placement.mirrors()}
    out, back = ("onsite", "offsite"), ("offsite", "onsite")
    assert ways == {
        ("<repo>.chunks", "remote"): out,
        ("<repo>.extents", "remote"): out,
        ("<repo>.commands", "remote"): out,
        ("<repo>.requests", "remote"): out,
        ("jobs", None): out,
        ("sessions", None): out,
        ("session-events", None): out,
        # produced on both sites, read on-site only: one way
        ("repositories", None): back,
        ("<repo>.index", "remote"): back,
        ("<repo>.replies", "remote"): back,
        ("<repo>.restore", "remote"): back,
    }
    text = mirror_properties(placement, "bf")
    outbound = re.compile(
        re.sub(r"\\(.)", r"\1", text.split("onsite->offsite.topics=")[1].splitlines()[0])
    )
    assert outbound.fullmatch("bf.remote.chunks")
    assert not outbound.fullmatch("bf.local.chunks"), "the on-site repository stays home"
    assert "| `local.chunks` | onsite | - |" in sites_table(placement)
    assert "| `remote.chunks` | onsite | offsite |" in sites_table(placement)


def test_a_topic_that_would_be_mirrored_both_ways_is_refused() -> None:
    """Repositories announced on both sites and read on both (a dedupe index off-site)
    would go round for ever under the identity policy."""
    placement = place_repositories(
        {
            "onsite": ("orchestrator", "source-mover", "gateway"),
            "offsite": ("target-mover", "dedupe-index"),
        },
        ["remote"],
        ["local"],
    )
    with pytest.raises(ConfigError, match="mirrored both ways"):
        placement.mirrors()


def test_placements_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ConfigError, match="both sites"):
        Placement({"onsite": ON_SITE, "offsite": ("source-mover", "target-mover")})
    with pytest.raises(ConfigError, match="unknown role"):
        Placement({"onsite": ON_SITE, "offsite": ("tape-mover",)})
    with pytest.raises(ConfigError, match="two sites"):
        Placement({"onsite": ON_SITE})
    with pytest.raises(ConfigError, match="site name"):
        Placement({"On Site": ON_SITE, "offsite": ("target-mover",)})


def test_mirror_properties_match_exactly_the_topics_that_cross() -> None:
    placement = _placement()
    text = mirror_properties(placement, "bf")
    assert "IdentityReplicationPolicy" in text
    lines = {  # as Java reads a .properties file: a backslash escapes the next character
        key: re.sub(r"\\(.)", r"\1", value)
        for key, value in (line.split("=", 1) for line in text.splitlines() if "->" in line)
    }
    assert lines["onsite->offsite.enabled"] == lines["offsite->onsite.enabled"] == "true"
    outbound = re.compile(lines["onsite->offsite.topics"])
    inbound = re.compile(lines["offsite->onsite.topics"])
    topics = Topics("bf")
    every = [s.name for s in topics.shared_specs() + topics.repository_specs("vm.a", 2, 1)]
    ways = _ways(placement)
    for name in [*every, "other.jobs", "bf.jobsx", "bfxjobs", "bf.guest-commands"]:
        flow = topics.flow(name)
        way = ways.get(flow.topic) if flow else None
        assert bool(outbound.fullmatch(name)) == (way == ("onsite", "offsite")), name
        assert bool(inbound.fullmatch(name)) == (way == ("offsite", "onsite")), name


def test_the_table_names_every_topic_once() -> None:
    table = sites_table(_placement())
    assert len(table.splitlines()) == len(FLOWS) + 2
    assert "| `<repo>.chunks` | onsite | offsite |" in table
    assert "| `dead-letter` | each site | (stays on its site) |" in table


def test_the_readme_shows_the_table() -> None:
    readme = Path(__file__).resolve().parents[3] / "README.md"
    assert sites_table(_placement()) in readme.read_text()
