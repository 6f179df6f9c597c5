"""Two sites, each with a Kafka cluster of its own, joined by MirrorMaker 2: which site
produces each topic and which way it is mirrored.

Every topic is produced on one site only (a topic's producers are one kind of role,
:data:`~blockferry.transport.topics.FLOWS`, or the owners of repositories, placed on
one site) and mirrored at most one way: from the site that produces it to the other,
when a role that consumes it runs there. Names stay the same on both sides (MirrorMaker
2's ``IdentityReplicationPolicy``), so no role's topic names change. Two kinds of topic
are exceptions:

* the orchestrator's state (jobs, sessions and their events) is mirrored to the other
  site even where no role reads it there, so that an orchestrator started there can
  take over with the first site lost;
* the dead-letter topic, which every role writes, stays on each site: its records name
  the topic and offset they came from, which only mean something on their own cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blockferry.core.errors import ConfigError
from blockferry.transport.topics import FLOWS, Flow

TAKEOVER_TOPICS = ("jobs", "sessions", "session-events")
"""Mirrored to the other site in any placement: what an orchestrator there needs."""

SITE_LOCAL_TOPICS = ("dead-letter",)
"""Never mirrored: written on every site, about records of that site's cluster."""


@dataclass(frozen=True)
class Mirror:
    """One topic's way across: produced on ``source``, mirrored to ``target``."""

    flow: Flow
    source: str
    target: str


@dataclass(frozen=True)
class Placement:
    """Which site each role runs on; a role not listed runs on neither."""

    sites: dict[str, tuple[str, ...]]
    """Site name: the roles placed there."""

    def __post_init__(self) -> None:
        if len(self.sites) != 2:
            raise ConfigError(f"two sites are needed, not {len(self.sites)}: {sorted(self.sites)}")
        for site in self.sites:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", site):
                raise ConfigError(f"site name {site!r}: lower-case letters, digits and -")
        placed = [role for roles in self.sites.values() for role in roles]
        known = {role for flow in FLOWS for role in (*flow.producers, *flow.consumers)}
        unknown = sorted(set(placed) - known)
        if unknown:
            raise ConfigError(f"unknown role(s) {', '.join(unknown)}: one of {sorted(known)}")
        twice = sorted({role for role in placed if placed.count(role) > 1})
        if twice:
            raise ConfigError(f"{', '.join(twice)} placed on both sites: a role runs on one")

    def site_of(self, role: str) -> str | None:
        for site, roles in self.sites.items():
            if role in roles:
                return site
        return None

    def other(self, site: str) -> str:
        (other,) = (name for name in self.sites if name != site)
        return other

    def producing_site(self, flow: Flow) -> str | None:
        """The one site that produces ``flow``'s topic, or None where no producer runs.

        Raises:
            ConfigError: producers of the topic are placed on both sites.
        """
        sites = {site for role in flow.producers if (site := self.site_of(role)) is not None}
        if len(sites) > 1:
            raise ConfigError(
                f"topic {flow.topic} would be produced on both sites ({', '.join(sorted(sites))})"
                f" by {', '.join(flow.producers)}: place them on one"
            )
        return next(iter(sites)) if sites else None

    def mirrors(self) -> list[Mirror]:
        """Every topic that crosses, and which way."""
        found = []
        for flow in FLOWS:
            if flow.topic in SITE_LOCAL_TOPICS:
                continue
            source = self.producing_site(flow)
            if source is None:
                continue
            target = self.other(source)
            consumed_there = any(self.site_of(role) == target for role in flow.consumers)
            if consumed_there or flow.topic in TAKEOVER_TOPICS:
                found.append(Mirror(flow, source, target))
        return found


def topic_pattern(prefix: str, flow: Flow) -> str:
    """The regular expression MirrorMaker 2 matches ``flow``'s topics with, whole (every
    repository's, for a ``<repo>.`` topic: names may hold dots)."""
    head = _literal(f"{prefix}.")
    if flow.topic.startswith("<repo>."):
        return head + ".+" + _literal(flow.topic.removeprefix("<repo>"))
    return head + _literal(flow.topic)


def _literal(name: str) -> str:
    """``name`` (letters, digits, ``.``, ``_``, ``-``: a topic name's) as a regular
    expression matching it alone."""
    return name.replace(".", r"\.")


def mirror_properties(placement: Placement, prefix: str) -> str:
    """The flow lines of an ``mm2.properties`` for ``placement``: each direction
    enabled with the topics it carries, the identity replication policy, and no
    mirroring of topic ACLs or of anything else."""
    lines = [
        f"# topics of the mesh {prefix!r}; generated by blockferry mirror-config",
        "replication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "sync.topic.acls.enabled=false",
    ]
    mirrors = placement.mirrors()
    for source in placement.sites:
        target = placement.other(source)
        patterns = [topic_pattern(prefix, m.flow) for m in mirrors if m.source == source]
        lines.append(f"{source}->{target}.enabled={'true' if patterns else 'false'}")
        if patterns:
            topics = "|".join(patterns).replace("\\", "\\\\")  # .properties escaping
            lines.append(f"{source}->{target}.topics={topics}")
    return "\n".join(lines) + "\n"


def sites_table(placement: Placement) -> str:
    """Each topic, the site that produces it and where it is mirrored, as markdown."""
    mirrored = {m.flow.topic: m.target for m in placement.mirrors()}
    lines = [
        "| topic (after the prefix) | produced on | mirrored to |",
        "| --- | --- | --- |",
    ]
    for flow in FLOWS:
        if flow.topic in SITE_LOCAL_TOPICS:
            lines.append(f"| `{flow.topic}` | each site | (stays on its site) |")
            continue
        source = placement.producing_site(flow) or "(not placed)"
        lines.append(f"| `{flow.topic}` | {source} | {mirrored.get(flow.topic, '-')} |")
    return "\n".join(lines)
