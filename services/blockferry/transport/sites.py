"""Two sites, each with a Kafka cluster of its own, joined by MirrorMaker 2: which site
produces each topic and which way it is mirrored.

Every topic is mirrored at most one way: from the site that produces it to the other,
when a role that consumes it runs there. Names stay the same on both sides (MirrorMaker
2's ``IdentityReplicationPolicy``), which cannot tell a mirrored record from a local one:
a topic mirrored both ways would go round for ever, and such a placement is refused.

A repository's topics are produced and read by its owner (:data:`OWNERS`) on one site.
The owners may run on both sites, the target mover on one and the gateway on the other
(a repository on each site, to copy restore points from one to the other): each
repository's topics are then placed, and mirrored, on their own, after the site of the
role that serves it; the ``repositories`` topic is produced on both and read on one.
Two kinds of topic are exceptions:

* the orchestrator's state (jobs, sessions and their events) is mirrored to the other
  site even where no role reads it there, so that an orchestrator started there can
  take over with the first site lost;
* the dead-letter topic, which every role writes, stays on each site: its records name
  the topic and offset they came from, which only mean something on their own cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from blockferry.core.errors import ConfigError
from blockferry.transport.topics import FLOWS, OWNERS, Flow

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
    repository: str | None = None
    """For a repository's topic placed per repository: that repository's; None: every
    repository's, or a topic not of a repository."""


@dataclass(frozen=True)
class Placement:
    """Which site each role runs on; a role not listed runs on neither."""

    sites: dict[str, tuple[str, ...]]
    """Site name: the roles placed there."""
    repositories: dict[str, str] = field(default_factory=dict)
    """Repository name: the site of its owner, where owners run on both sites (see
    :func:`place_repositories`); empty where they run on one."""

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
        owner_sites = {self.site_of(role) for role in OWNERS} - {None}
        if len(owner_sites) > 1 and not self.repositories:
            raise ConfigError(
                "owners on both sites (the target mover on one, the gateway on the other):"
                " name the repositories each serves"
            )
        for repository, site in self.repositories.items():
            if site not in owner_sites:
                raise ConfigError(f"repository {repository} on {site}, where no owner runs")

    def site_of(self, role: str) -> str | None:
        for site, roles in self.sites.items():
            if role in roles:
                return site
        return None

    def other(self, site: str) -> str:
        (other,) = (name for name in self.sites if name != site)
        return other

    def mirrors(self) -> list[Mirror]:
        """Every topic that crosses, and which way.

        Raises:
            ConfigError: a topic would be mirrored both ways.
        """
        found = []
        for flow in FLOWS:
            if flow.topic in SITE_LOCAL_TOPICS:
                continue
            for repository in self.repositories_of(flow):
                ways = [
                    Mirror(flow, source, self.other(source), repository)
                    for source in sorted(self.producing_sites(flow, repository))
                    if self.other(source) in self._sites_of(flow.consumers, repository)
                    or flow.topic in TAKEOVER_TOPICS
                ]
                if len(ways) > 1:
                    raise ConfigError(
                        f"topic {flow.topic} would be produced and read on both sites"
                        f" (by {', '.join(flow.producers)}; read by"
                        f" {', '.join(flow.consumers)}), so mirrored both ways: place them"
                        " on one"
                    )
                found += ways
        return found

    def producing_sites(self, flow: Flow, repository: str | None = None) -> set[str]:
        """The sites that produce ``flow``'s topic (``repository``'s, where placed per
        repository)."""
        return self._sites_of(flow.producers, repository)

    def repositories_of(self, flow: Flow) -> Sequence[str | None]:
        """A repository topic's repositories where they are placed one by one, else
        None: the topic of every repository, or of none."""
        if flow.topic.startswith("<repo>.") and self.repositories:
            return sorted(self.repositories)
        return [None]

    def _sites_of(self, roles: Iterable[str], repository: str | None) -> set[str]:
        """Where ``roles`` run; for owners placed per repository, the site of
        ``repository``'s (or, for None, of every repository's)."""
        found: set[str] = set()
        for role in roles:
            if role in OWNERS and self.repositories:
                if repository is None:
                    found.update(self.repositories.values())
                else:
                    found.add(self.repositories[repository])
            elif (site := self.site_of(role)) is not None:
                found.add(site)
        return found


def place_repositories(
    sites: dict[str, tuple[str, ...]],
    repositories: Sequence[str],
    gateway_repositories: Sequence[str],
) -> Placement:
    """The placement of roles on ``sites`` where the target mover serves
    ``repositories`` and the gateway ``gateway_repositories``: each repository on the
    site of the role that serves it when the two run on different sites (else all on
    the one, and they need no naming)."""
    site_of = {role: site for site, roles in sites.items() for role in roles}
    target_site, gateway_site = site_of.get("target-mover"), site_of.get("gateway")
    if target_site is None or gateway_site is None or target_site == gateway_site:
        return Placement(sites)
    placed = {name: target_site for name in repositories}
    for name in gateway_repositories:
        if name in placed:
            raise ConfigError(f"repository {name} is served by the target mover and the gateway")
        placed[name] = gateway_site
    return Placement(sites, placed)


def topic_pattern(prefix: str, flow: Flow, repository: str | None = None) -> str:
    """The regular expression MirrorMaker 2 matches ``flow``'s topics with, whole: for a
    ``<repo>.`` topic, ``repository``'s, or every repository's for None (names may
    hold dots)."""
    head = _literal(f"{prefix}.")
    if flow.topic.startswith("<repo>."):
        name = ".+" if repository is None else _literal(repository)
        return head + name + _literal(flow.topic.removeprefix("<repo>"))
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
        patterns = [
            topic_pattern(prefix, m.flow, m.repository) for m in mirrors if m.source == source
        ]
        lines.append(f"{source}->{target}.enabled={'true' if patterns else 'false'}")
        if patterns:
            topics = "|".join(patterns).replace("\\", "\\\\")  # .properties escaping
            lines.append(f"{source}->{target}.topics={topics}")
    return "\n".join(lines) + "\n"


def sites_table(placement: Placement) -> str:
    """Each topic, the sites that produce it and where it is mirrored, as markdown (a
    repository's topics one repository at a time where they are placed so)."""
    mirrored = {(m.flow.topic, m.repository): m.target for m in placement.mirrors()}
    lines = [
        "| topic (after the prefix) | produced on | mirrored to |",
        "| --- | --- | --- |",
    ]
    for flow in FLOWS:
        if flow.topic in SITE_LOCAL_TOPICS:
            lines.append(f"| `{flow.topic}` | each site | (stays on its site) |")
            continue
        for repository in placement.repositories_of(flow):
            topic = flow.topic if repository is None else flow.topic.replace("<repo>", repository)
            sources = ", ".join(sorted(placement.producing_sites(flow, repository)))
            target = mirrored.get((flow.topic, repository), "-")
            lines.append(f"| `{topic}` | {sources or '(not placed)'} | {target} |")
    return "\n".join(lines)
