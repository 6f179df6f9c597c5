"""The Kafka ACLs of a mesh: one principal per role, allowed only what :data:`FLOWS`
says the role does.

A role may write the topics it produces, read the topics it consumes and join its own
consumer groups; the orchestrator may also describe every group and the topics the
groups read, for the consumer lag it reports (:mod:`kafka_watch`). It may create,
and describe the configs of, the topics it uses: each role creates and checks the
shared ones at start, and a repository's when it learns of the repository, so none
waits for another. The owner of a repository
(:data:`~blockferry.transport.topics.OWNERS`) creates all of its topics before it
announces it; on two sites (:mod:`sites`) the roles of the site without the owner
create the ones they use on their own cluster.
Every name is literal: a role is granted a repository's topics only when that
repository is listed, so no principal may touch the topics of a repository it was not
given.

On two sites (:func:`site_bindings`) each cluster grants the roles placed on its site,
and MirrorMaker 2's principal exactly what mirroring needs there: to read the topics
that leave the site, to create and write (and keep the configs of) those that arrive,
and its own internal topics and group; the orchestrator may read MirrorMaker's
heartbeats (:mod:`link`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from blockferry.core.errors import TransportError
from blockferry.settings import KafkaSecurity
from blockferry.transport.kafka import librdkafka_options
from blockferry.transport.link import HEARTBEATS_TOPIC
from blockferry.transport.sites import Placement
from blockferry.transport.topics import EVERY_ROLE, FLOWS, OWNERS

_OWNER_GROUPS = ("<repo>.target", "<repo>.assembly", "<repo>.owner", "<repo>.owner-requests")

ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "orchestrator": (),
    "guest-proxy": ("guest-proxy",),
    "source-mover": ("source-mover",),
    "dedupe-index": ("dedupe-index",),
    "target-mover": _OWNER_GROUPS,
    "gateway": _OWNER_GROUPS,
}
"""The consumer groups (after the prefix) each role joins; the others read partitions
they assign themselves, which needs no group."""

DEFAULT_PRINCIPAL = "User:blockferry-{role}"
"""The principal of each role, ``{role}`` replaced by its name."""

MIRROR_MAKER = "mirror-maker"
"""MirrorMaker 2's name in a principal template (``User:blockferry-mirror-maker``)."""

_LEAVING = ("Read", "Describe", "DescribeConfigs")
_ARRIVING = ("Write", "Create", "Describe", "DescribeConfigs", "AlterConfigs")
_OWN = ("Read", "Write", "Create", "Describe", "DescribeConfigs")


@dataclass(frozen=True, order=True)
class Binding:
    """One allowed operation of a principal on a literal topic or group, from any host."""

    principal: str
    resource_type: str
    """``topic`` or ``group``."""
    name: str
    operation: str
    """As Kafka names it: Read, Write, Create, Describe, DescribeConfigs, AlterConfigs."""


def _names(pattern: str, prefix: str, repositories: Sequence[str]) -> list[str]:
    if pattern.startswith("<repo>."):
        suffix = pattern.removeprefix("<repo>")
        return [f"{prefix}.{repo}{suffix}" for repo in repositories]
    return [f"{prefix}.{pattern}"]


def bindings(
    prefix: str,
    repositories: Sequence[str],
    principal_of: Callable[[str], str],
    gateway_repositories: Sequence[str] = (),
) -> list[Binding]:
    """Every ACL binding of the mesh whose topics start with ``prefix``, for the
    repositories named: those the target mover serves, and those the gateway serves
    (``gateway_repositories``). ``principal_of(role)`` is the role's principal.

    Only the one role that serves a repository may touch that repository's topics as
    its owner, so each of them still has one producing role."""
    served = {"target-mover": repositories, "gateway": gateway_repositories}
    every_repository = [*repositories, *gateway_repositories]
    found: set[Binding] = set()
    for role in EVERY_ROLE:
        principal = principal_of(role)
        repositories = served.get(role, every_repository)
        if role in OWNERS and not repositories:
            continue  # an owner serving no repository needs no access at all
        for flow in FLOWS:
            uses = []
            if role in flow.producers:
                uses.append("Write")
            if role in flow.consumers:
                uses.append("Read")
            if uses or (role in OWNERS and flow.topic.startswith("<repo>.")):
                uses += ["Create", "Describe", "DescribeConfigs"]
            for name in _names(flow.topic, prefix, repositories):
                found.update(Binding(principal, "topic", name, op) for op in uses)
        for group in ROLE_GROUPS[role]:
            for name in _names(group, prefix, repositories):
                found.add(Binding(principal, "group", name, "Read"))
                # the orchestrator's lag watch reads every group's committed offsets
                found.add(Binding(principal_of("orchestrator"), "group", name, "Describe"))
                for flow in FLOWS:
                    if role in flow.consumers:
                        found.update(
                            Binding(principal_of("orchestrator"), "topic", topic, "Describe")
                            for topic in _names(flow.topic, prefix, repositories)
                        )
    return sorted(found)


def site_bindings(
    prefix: str,
    repositories: Sequence[str],
    principal_of: Callable[[str], str],
    placement: Placement,
    site: str,
    gateway_repositories: Sequence[str] = (),
) -> list[Binding]:
    """The ACL bindings of ``site``'s cluster on two sites: :func:`bindings` of the roles
    placed there, MirrorMaker 2's (its principal ``principal_of(MIRROR_MAKER)``), and
    the orchestrator's on MirrorMaker's heartbeats."""
    here = {principal_of(role) for role in placement.sites[site]}
    found = {
        b
        for b in bindings(prefix, repositories, principal_of, gateway_repositories)
        if b.principal in here
    }
    mirror_maker = principal_of(MIRROR_MAKER)
    every_repository = [*repositories, *gateway_repositories]
    for mirror in placement.mirrors():
        if site not in (mirror.source, mirror.target):
            continue
        operations = _LEAVING if mirror.source == site else _ARRIVING
        crossing = every_repository if mirror.repository is None else [mirror.repository]
        for name in _names(mirror.flow.topic, prefix, crossing):
            found.update(Binding(mirror_maker, "topic", name, op) for op in operations)
    other = placement.other(site)
    # the flow into this cluster keeps its worker's state here (configs, offsets,
    # status, offset syncs); heartbeats are written here, those of the other site
    # mirrored here, and checkpoints too
    own = [f"mm2-{kind}.{other}.internal" for kind in ("configs", "offsets", "status")]
    own += [f"mm2-offset-syncs.{other}.internal", f"{other}.checkpoints.internal"]
    own += [HEARTBEATS_TOPIC, f"{other}.{HEARTBEATS_TOPIC}"]
    for name in own:
        found.update(Binding(mirror_maker, "topic", name, op) for op in _OWN)
    found.add(Binding(mirror_maker, "group", f"{other}-mm2", "Read"))
    if placement.site_of("orchestrator") == site:
        orchestrator = principal_of("orchestrator")
        found.update(
            Binding(orchestrator, "topic", HEARTBEATS_TOPIC, op) for op in ("Read", "Describe")
        )
    return sorted(found)


def principal_template(template: str) -> Callable[[str], str]:
    """``principal_of`` from a template such as :data:`DEFAULT_PRINCIPAL`."""
    if "{role}" not in template:
        raise ValueError(f"the principal template {template!r} must contain {{role}}")
    if ":" not in template:
        raise ValueError(f"the principal template {template!r} must start with a type: User:…")
    return lambda role: template.replace("{role}", role)


def acl_commands(found: Iterable[Binding]) -> list[str]:
    """``kafka-acls.sh`` command lines adding ``found``: one per principal, resource
    type and set of operations. They leave the broker and the admin's client settings
    to the shell variables ``KAFKA`` and ``ADMIN_CONFIG``."""
    operations: dict[tuple[str, str, str], list[str]] = {}
    for b in found:
        operations.setdefault((b.principal, b.resource_type, b.name), []).append(b.operation)
    grouped: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for (principal, kind, name), ops in operations.items():
        grouped.setdefault((principal, kind, tuple(sorted(ops))), []).append(name)
    head = 'kafka-acls.sh --bootstrap-server "$KAFKA" --command-config "$ADMIN_CONFIG"'
    lines = []
    for (principal, kind, operations_of), names in sorted(grouped.items()):
        args = ["--add", "--allow-principal", principal]
        for op in operations_of:
            args += ["--operation", op]
        for name in sorted(names):
            args += [f"--{kind}", name]
        lines.append(f"{head} {shlex.join(args)}")
    return lines


def acl_document(found: Iterable[Binding]) -> str:
    """``found`` as JSON, one entry per principal with its ACLs in the layout of a
    KafkaUser's ``spec.authorization.acls`` (resource, operations, host), for a Helm
    chart or an operator to template."""
    users: dict[str, dict[tuple[str, str], list[str]]] = {}
    for b in found:
        users.setdefault(b.principal, {}).setdefault((b.resource_type, b.name), []).append(
            b.operation
        )
    document = {
        principal: [
            {
                "resource": {"type": kind, "name": name, "patternType": "literal"},
                "operations": sorted(operations),
                "host": "*",
            }
            for (kind, name), operations in sorted(resources.items())
        ]
        for principal, resources in sorted(users.items())
    }
    return json.dumps(document, indent=2)


_OPERATIONS = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Create": AclOperation.CREATE,
    "Describe": AclOperation.DESCRIBE,
    "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
    "AlterConfigs": AclOperation.ALTER_CONFIGS,
}
_RESOURCES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}


def apply(
    bootstrap: str, security: KafkaSecurity, found: Sequence[Binding], timeout: float = 30.0
) -> None:
    """Add ``found`` to the cluster's ACLs (those already there stay as they are), as a
    principal allowed to alter them (the cluster's admin).

    Raises:
        TransportError: the cluster cannot be reached or refused one of them.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, **librdkafka_options(security)})
    acl_bindings = [
        AclBinding(
            _RESOURCES[b.resource_type],
            b.name,
            ResourcePatternType.LITERAL,
            b.principal,
            "*",
            _OPERATIONS[b.operation],
            AclPermissionType.ALLOW,
        )
        for b in found
    ]
    if not acl_bindings:
        return
    futures = admin.create_acls(acl_bindings, request_timeout=timeout)
    for binding, future in futures.items():
        try:
            future.result(timeout)
        except (KafkaException, TimeoutError) as exc:
            raise TransportError(f"adding the ACL {binding} on {bootstrap}: {exc}") from exc
