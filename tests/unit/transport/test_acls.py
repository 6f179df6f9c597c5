"""The mesh's ACLs follow its flows: a role may write only what it produces, read only
what it consumes, and touch only the repositories listed (the broker's side is
tests/e2e/test_secured_mesh.py)."""

from __future__ import annotations

import json
import shlex

import pytest

from blockferry.transport.acls import (
    DEFAULT_PRINCIPAL,
    MIRROR_MAKER,
    Binding,
    acl_commands,
    acl_document,
    bindings,
    principal_template,
    site_bindings,
)
from blockferry.transport.sites import Placement, place_repositories
from blockferry.transport.topics import FLOWS, OWNERS

PRINCIPAL = principal_template(DEFAULT_PRINCIPAL)


def allowed(role: str, operation: str, repositories: tuple[str, ...] = ("r1",)) -> set[str]:
    principal = PRINCIPAL(role)
    return {
        b.name
        for b in bindings("bf", repositories, PRINCIPAL)
        if b.principal == principal and b.operation == operation
    }


def test_each_role_writes_only_the_topics_it_produces() -> None:
    assert allowed("source-mover", "Write") == {
        "bf.task-progress",
        "bf.dead-letter",
        "bf.r1.chunks",
        "bf.r1.extents",
        "bf.r1.lookups",
        "bf.r1.requests",
    }
    assert allowed("orchestrator", "Write") == {
        "bf.tasks",
        "bf.task-control",
        "bf.guest-commands",
        "bf.jobs",
        "bf.sessions",
        "bf.session-events",
        "bf.session-results",
        "bf.restore-points-committed",
        "bf.dead-letter",
        "bf.r1.commands",
    }
    assert "bf.guest-commands" not in allowed("target-mover", "Write")


def test_the_orchestrator_describes_every_group_for_the_consumer_lag() -> None:
    found = bindings("bf", ("r1",), PRINCIPAL)
    groups = {b.name for b in found if b.resource_type == "group"}
    orchestrators = [
        b for b in found if b.principal == PRINCIPAL("orchestrator") and b.resource_type == "group"
    ]
    assert {b.name for b in orchestrators} == groups
    assert {b.operation for b in orchestrators} == {"Describe"}
    assert "bf.r1.chunks" in allowed("orchestrator", "Describe")


def test_each_role_reads_only_what_it_consumes_and_joins_only_its_groups() -> None:
    assert allowed("guest-proxy", "Read") == {"bf.guest-commands", "bf.guest-proxy"}
    assert allowed("target-mover", "Read") >= {"bf.r1.target", "bf.r1.owner", "bf.r1.chunks"}
    assert "bf.r1.restore" not in allowed("target-mover", "Read")
    assert "bf.tasks" not in allowed("dedupe-index", "Read")


def test_a_role_may_create_the_topics_it_uses_and_an_owner_its_repository_s() -> None:
    """Its owner creates every topic of a repository; on two sites the roles of the
    other site create those they use on their own cluster."""
    assert {n for n in allowed("target-mover", "Create") if n.startswith("bf.r1.")} == {
        f"bf.r1.{kind}"
        for kind in (
            "chunks",
            "extents",
            "index",
            "lookups",
            "lookup-replies",
            "commands",
            "requests",
            "replies",
            "restore",
        )
    }
    assert allowed("dedupe-index", "Create") == {
        "bf.repositories",
        "bf.dead-letter",
        "bf.r1.index",
        "bf.r1.lookups",
        "bf.r1.lookup-replies",
    }
    found = bindings("bf", ("r1",), PRINCIPAL)
    for role in ("orchestrator", "guest-proxy", "source-mover", "dedupe-index"):
        used = {
            b.name
            for b in found
            if b.principal == PRINCIPAL(role)
            and b.resource_type == "topic"
            and b.operation in ("Read", "Write")
        }
        assert allowed(role, "Create") == used, role
        assert allowed(role, "DescribeConfigs") == used, role


def test_only_the_repositories_listed_are_granted() -> None:
    names = {b.name for b in bindings("bf", ("r1", "r2"), PRINCIPAL)}
    assert {"bf.r1.chunks", "bf.r2.chunks", "bf.r2.owner"} <= names
    assert not any(".r3." in n for n in names)
    assert all(b.name.count(".") == 1 for b in bindings("bf", (), PRINCIPAL))  # shared only


def test_commands_add_exactly_the_bindings() -> None:
    found = bindings("bf", ("r1",), PRINCIPAL)
    seen = set()
    for line in acl_commands(found):
        words = shlex.split(line.replace('"$KAFKA"', "K").replace('"$ADMIN_CONFIG"', "C"))
        assert words[:6] == [
            "kafka-acls.sh",
            "--bootstrap-server",
            "K",
            "--command-config",
            "C",
            "--add",
        ]
        principal = words[words.index("--allow-principal") + 1]
        pairs = list(zip(words[6::2], words[7::2], strict=True))
        operations = [v for k, v in pairs if k == "--operation"]
        resources = [(k.removeprefix("--"), v) for k, v in pairs if k in ("--topic", "--group")]
        seen |= {Binding(principal, k, n, op) for k, n in resources for op in operations}
    assert seen == set(found)


def test_the_document_lists_every_binding_per_principal() -> None:
    found = bindings("bf", ("r1",), PRINCIPAL)
    document = json.loads(acl_document(found))
    seen = {
        Binding(principal, acl["resource"]["type"], acl["resource"]["name"], op)
        for principal, acls in document.items()
        for acl in acls
        for op in acl["operations"]
    }
    assert seen == set(found)
    assert set(document) == {
        PRINCIPAL(r)
        for r in ("orchestrator", "guest-proxy", "source-mover", "dedupe-index", "target-mover")
    }, "the gateway serves no repository here: it gets nothing"


@pytest.mark.parametrize("template", ["User:blockferry", "blockferry-{role}"])
def test_a_principal_template_without_role_or_type_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="principal template"):
        principal_template(template)


def test_every_consumed_topic_has_one_producing_role_so_acls_pin_a_record_s_origin() -> None:
    """Why records carry no signature: with a principal per role, the broker's
    authorizer already proves which role wrote a record, as no topic that is read has two
    producing roles (the dead-letter topic, written by all, is read by operators only)."""
    for flow in FLOWS:
        if flow.consumers:
            assert len(flow.producers) == 1 or flow.producers == OWNERS, flow
    found = bindings("bf", ("local",), PRINCIPAL, ("offsite",))
    topics = {b.name for b in found if b.resource_type == "topic"}
    for topic in {t for t in topics if t.startswith(("bf.local.", "bf.offsite."))}:
        writers = {b.principal for b in found if b.name == topic and b.operation == "Write"}
        assert len(writers) == 1, (topic, writers)
    owners = {
        b.principal for b in found if b.name.startswith("bf.offsite.") and b.operation == "Read"
    } & {PRINCIPAL(role) for role in OWNERS}
    assert owners == {PRINCIPAL("gateway")}, "a repository's topics: its one owner only"
    commands = {f.topic: f.producers for f in FLOWS if "Command" in f.records}
    assert commands == {
        "task-control": ("orchestrator",),
        "guest-commands": ("orchestrator",),
        "<repo>.commands": ("orchestrator",),  # gc, prune, commit: the orchestrator's only
        "<repo>.requests": ("source-mover",),  # a fixed index, a restore stream
    }


def test_on_two_sites_each_cluster_grants_its_roles_and_mirror_maker_what_crosses() -> None:
    placement = Placement(
        {
            "onsite": ("orchestrator", "guest-proxy", "source-mover", "dedupe-index"),
            "offsite": ("target-mover",),
        }
    )
    onsite = site_bindings("bf", ("r1",), PRINCIPAL, placement, "onsite")
    offsite = site_bindings("bf", ("r1",), PRINCIPAL, placement, "offsite")

    def granted(found: list[Binding], role: str, operation: str) -> set[str]:
        principal = PRINCIPAL(role)
        return {b.name for b in found if b.principal == principal and b.operation == operation}

    assert not granted(onsite, "target-mover", "Read"), "a role only on its own site's cluster"
    assert not granted(offsite, "source-mover", "Write")
    # chunks leave on-site and arrive off-site; the index the other way
    assert "bf.r1.chunks" in granted(onsite, MIRROR_MAKER, "Read")
    assert "bf.r1.chunks" not in granted(onsite, MIRROR_MAKER, "Write")
    assert "bf.r1.chunks" in granted(offsite, MIRROR_MAKER, "Write")
    assert "bf.r1.index" in granted(onsite, MIRROR_MAKER, "Write")
    assert "bf.r1.index" in granted(offsite, MIRROR_MAKER, "Read")
    # lookups never cross; dead letters stay home
    for found in (onsite, offsite):
        assert "bf.r1.lookups" not in granted(found, MIRROR_MAKER, "Read")
        assert "bf.dead-letter" not in granted(found, MIRROR_MAKER, "Read")
    # its own topics and its worker's group, named after the other site
    assert "mm2-offsets.offsite.internal" in granted(onsite, MIRROR_MAKER, "Write")
    assert "mm2-offsets.onsite.internal" in granted(offsite, MIRROR_MAKER, "Write")
    assert granted(onsite, MIRROR_MAKER, "Read") >= {"heartbeats", "offsite-mm2"}
    # the orchestrator watches the link on its own site
    assert "heartbeats" in granted(onsite, "orchestrator", "Read")
    assert "heartbeats" not in granted(offsite, "orchestrator", "Read")


def test_with_a_repository_on_each_site_only_the_remote_ones_topics_cross() -> None:
    """The gateway on-site serves ``local``, the target mover off-site ``remote``."""
    placement = place_repositories(
        {
            "onsite": ("orchestrator", "guest-proxy", "source-mover", "dedupe-index", "gateway"),
            "offsite": ("target-mover",),
        },
        ["remote"],
        ["local"],
    )
    onsite = site_bindings("bf", ("remote",), PRINCIPAL, placement, "onsite", ("local",))
    offsite = site_bindings("bf", ("remote",), PRINCIPAL, placement, "offsite", ("local",))

    def granted(found: list[Binding], role: str, operation: str) -> set[str]:
        principal = PRINCIPAL(role)
        return {b.name for b in found if b.principal == principal and b.operation == operation}

    assert "bf.remote.chunks" in granted(onsite, MIRROR_MAKER, "Read")
    assert "bf.local.chunks" not in granted(onsite, MIRROR_MAKER, "Read")
    assert not {n for n in granted(offsite, MIRROR_MAKER, "Write") if n.startswith("bf.local.")}
    # each owner on its own site's cluster, with its own repository's topics
    assert "bf.local.chunks" in granted(onsite, "gateway", "Read")
    assert not granted(offsite, "gateway", "Read")
    assert "bf.remote.chunks" in granted(offsite, "target-mover", "Read")
    assert not granted(onsite, "target-mover", "Read")
    # both announce; the announcements cross one way only
    assert "bf.repositories" in granted(onsite, "gateway", "Write")
    assert "bf.repositories" in granted(offsite, MIRROR_MAKER, "Read")
    assert "bf.repositories" not in granted(onsite, MIRROR_MAKER, "Read")
