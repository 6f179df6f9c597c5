"""Topic names, how each topic is created, and who writes and reads it.

:data:`FLOWS` lists every topic with the one kind of role that produces it (the
dead-letter topic excepted: every consumer sets records aside there), the roles that
consume it and the records it carries; the README's table and access rules come from
it. A digest's shard is the same partition number in a repository's chunks, index and
lookups (``kafka.shard_of``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_RECORD_BYTES = 16 * 1024 * 1024
"""Carries a 4 MiB block stored uncompressed with room to spare."""


EVENTS_RETENTION_MS = 90 * 24 * 3600 * 1000
"""Session history is kept 90 days; the current state of each session stays compacted."""

CONTROL_RETENTION_MS = 24 * 3600 * 1000
"""A cancellation matters while its session's tasks may still be offered: a day is ample."""

LOOKUP_RETENTION_MS = 3600 * 1000
"""A lookup is useless seconds after it was asked; an hour keeps them for debugging."""


@dataclass(frozen=True)
class Flow:
    """A topic (its name after the prefix; ``<repo>.`` for each repository's) and the
    roles that produce and consume it."""

    topic: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    records: tuple[str, ...]
    bulk: bool = False
    """Carries block data: produced and consumed with ``kafka.bulk_client``."""


EVERY_ROLE = (
    "orchestrator",
    "guest-proxy",
    "source-mover",
    "dedupe-index",
    "target-mover",
    "gateway",
)

OWNERS = ("target-mover", "gateway")
"""The roles that own repositories: the target mover (directly attached disks) or the
gateway (shares and buckets) serves each, with the same records."""

FLOWS: tuple[Flow, ...] = (
    Flow("tasks", ("orchestrator",), ("source-mover",), ("Task", "ChangedRangesPage")),
    Flow("task-progress", ("source-mover",), ("orchestrator",), ("TaskProgress",)),
    Flow("task-control", ("orchestrator",), ("source-mover",), ("Command",)),
    Flow("guest-commands", ("orchestrator",), ("guest-proxy",), ("Command",)),
    Flow("guest-events", ("guest-proxy",), ("orchestrator",), ("Reply",)),
    Flow(
        "repositories",
        OWNERS,
        ("orchestrator", "source-mover", "dedupe-index"),
        ("RepositoryInfo",),
    ),
    Flow("jobs", ("orchestrator",), ("orchestrator",), ("StoredJob",)),
    Flow("sessions", ("orchestrator",), ("orchestrator",), ("StoredSession",)),
    Flow("session-events", ("orchestrator",), ("orchestrator",), ("SessionEvent",)),
    Flow("session-results", ("orchestrator",), (), ("SessionEnded",)),
    Flow("restore-points-committed", ("orchestrator",), (), ("RestorePointCommitted",)),
    Flow("dead-letter", EVERY_ROLE, (), ("DeadLetter",)),
    Flow("<repo>.chunks", ("source-mover",), OWNERS, ("Chunk",), bulk=True),
    Flow(
        "<repo>.extents",
        ("source-mover",),
        OWNERS,
        ("Extents", "DiskEnd", "ResumeQuery"),
    ),
    Flow(
        "<repo>.index",
        OWNERS,
        ("dedupe-index", *OWNERS),
        ("IndexEntry", "Tombstone"),
    ),
    Flow("<repo>.lookups", ("source-mover",), ("dedupe-index",), ("LookupRequest",)),
    Flow("<repo>.lookup-replies", ("dedupe-index",), ("source-mover",), ("LookupReply",)),
    Flow("<repo>.commands", ("orchestrator",), OWNERS, ("Command",)),
    Flow("<repo>.requests", ("source-mover",), OWNERS, ("Command",)),
    Flow(
        "<repo>.replies",
        OWNERS,
        ("orchestrator", "source-mover"),
        ("Reply", "FixedIndexPage"),
    ),
    Flow(
        "<repo>.restore",
        OWNERS,
        ("source-mover",),
        ("RestoreStart", "RestoreBlock", "RestoreEnd"),
        bulk=True,
    ),
)


def flows_table() -> str:
    """:data:`FLOWS` as the README's markdown table."""
    lines = [
        "| topic (after the prefix) | produced by | consumed by | records |",
        "| --- | --- | --- | --- |",
    ]
    for flow in FLOWS:
        producers = "every role" if flow.producers == EVERY_ROLE else ", ".join(flow.producers)
        consumers = ", ".join(flow.consumers) or "operators"
        lines.append(f"| `{flow.topic}` | {producers} | {consumers} | {', '.join(flow.records)} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicState:
    """A topic as the cluster describes it: the fewest replicas any of its partitions
    has, and its effective topic-level configs (broker defaults included)."""

    name: str
    replication: int
    configs: dict[str, str]


CHECKED_CONFIGS = ("cleanup.policy", "min.insync.replicas", "max.message.bytes")
"""The topic configs :func:`topic_problems` reads."""


def replication_for(brokers: int) -> int:
    """The replication factor of a topic on a cluster of ``brokers``: three copies where
    there are three brokers, so one broker can be lost without losing a record."""
    return max(1, min(3, brokers))


def min_isr_for(replication: int) -> int:
    """The min.insync.replicas of a topic: an acknowledged record is on two brokers when
    there are three copies (one broker may be down and writes go on); with fewer copies
    any more than one would stop writes whenever a broker is down."""
    return 2 if replication >= 3 else 1


@dataclass(frozen=True)
class TopicProblem:
    """One setting of an existing topic that blockferry cannot work with."""

    topic: str
    setting: str
    actual: str
    required: str
    fix: str

    def __str__(self) -> str:
        return (
            f"topic {self.topic}: {self.setting} is {self.actual}, must be {self.required}"
            f" (fix: {self.fix})"
        )


def _alter(topic: str, setting: str, value: str) -> str:
    return (
        f"kafka-configs.sh --bootstrap-server BROKER --alter --entity-type topics"
        f" --entity-name {topic} --add-config {setting}={value}"
    )


def topic_problems(spec: TopicSpec, state: TopicState, brokers: int) -> list[TopicProblem]:
    """What is wrong with an existing topic for ``spec`` on a cluster of ``brokers``
    (those alive now): too few replicas, a min.insync.replicas that loses acknowledged
    records or stops writes when one broker is down, a compacted topic that is not
    compacted (state would be deleted by age), a ``max.message.bytes`` smaller than the
    records it must carry. Empty when the topic is fit for use."""
    problems: list[TopicProblem] = []
    name = spec.name
    replication = replication_for(brokers)
    if state.replication < replication:
        problems.append(
            TopicProblem(
                name,
                "replication factor",
                str(state.replication),
                f"at least {replication}",
                "add replicas with kafka-reassign-partitions.sh, or delete the topic"
                " while blockferry is stopped so that it is created again",
            )
        )
    want_isr = min_isr_for(replication)
    most_isr = max(want_isr, state.replication - 1)
    actual_isr = state.configs.get("min.insync.replicas", "")
    if not (actual_isr.isdigit() and want_isr <= int(actual_isr) <= most_isr):
        required = str(want_isr) if want_isr == most_isr else f"{want_isr} to {most_isr}"
        problems.append(
            TopicProblem(
                name,
                "min.insync.replicas",
                actual_isr or "unknown",
                required,
                _alter(name, "min.insync.replicas", str(want_isr)),
            )
        )
    if spec.configs.get("cleanup.policy") == "compact":
        policy = state.configs.get("cleanup.policy", "")
        if policy != "compact":
            problems.append(
                TopicProblem(
                    name,
                    "cleanup.policy",
                    policy or "unknown",
                    "compact",
                    _alter(name, "cleanup.policy", "compact"),
                )
            )
    if "max.message.bytes" in spec.configs:
        want = int(spec.configs["max.message.bytes"])
        actual = state.configs.get("max.message.bytes", "")
        if not (actual.isdigit() and int(actual) >= want):
            problems.append(
                TopicProblem(
                    name,
                    "max.message.bytes",
                    actual or "unknown",
                    f"at least {want}",
                    _alter(name, "max.message.bytes", str(want)),
                )
            )
    return problems


@dataclass(frozen=True)
class Topics:
    """The topic names of one mesh, from its prefix."""

    prefix: str = "blockferry"

    def flow(self, topic: str) -> Flow | None:
        """The flow of the mesh's ``topic`` (a full name), or None if it is none of its."""
        head = f"{self.prefix}."
        if not topic.startswith(head):
            return None
        name = topic[len(head) :]
        for flow in FLOWS:
            pattern = flow.topic
            if pattern.startswith("<repo>."):
                suffix = pattern[len("<repo>") :]
                if name.endswith(suffix) and len(name) > len(suffix):
                    return flow
            elif name == pattern:
                return flow
        return None

    @property
    def tasks(self) -> str:
        return f"{self.prefix}.tasks"

    @property
    def task_progress(self) -> str:
        return f"{self.prefix}.task-progress"

    @property
    def task_control(self) -> str:
        return f"{self.prefix}.task-control"

    @property
    def guest_commands(self) -> str:
        return f"{self.prefix}.guest-commands"

    @property
    def guest_events(self) -> str:
        return f"{self.prefix}.guest-events"

    @property
    def repositories(self) -> str:
        return f"{self.prefix}.repositories"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}.sessions"

    @property
    def session_events(self) -> str:
        return f"{self.prefix}.session-events"

    @property
    def session_results(self) -> str:
        """Public: each session's end (:class:`~blockferry.transport.records.SessionEnded`)."""
        return f"{self.prefix}.session-results"

    @property
    def restore_point_events(self) -> str:
        """Public: each restore point committed (``RestorePointCommitted``)."""
        return f"{self.prefix}.restore-points-committed"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    def chunks(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.chunks"

    def extents(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.extents"

    def index(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.index"

    def lookups(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.lookups"

    def repository_of_lookups(self, topic: str) -> str | None:
        """The repository whose lookups topic ``topic`` is, or None."""
        head, tail = f"{self.prefix}.", ".lookups"
        if topic.startswith(head) and topic.endswith(tail) and len(topic) > len(head + tail):
            return topic[len(head) : -len(tail)]
        return None

    def commands(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.commands"

    def requests(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.requests"

    def replies(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.replies"

    def lookup_replies(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.lookup-replies"

    def restore(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.restore"

    def shared_specs(self, partitions: int = 4) -> list[TopicSpec]:
        """The topics every mesh has."""
        events = {"retention.ms": str(EVENTS_RETENTION_MS)}
        return [
            TopicSpec(self.tasks, partitions),
            TopicSpec(self.task_progress, partitions),
            TopicSpec(self.task_control, 1, {"retention.ms": str(CONTROL_RETENTION_MS)}),
            TopicSpec(self.guest_commands, partitions),
            TopicSpec(self.guest_events, 1),
            TopicSpec(self.repositories, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.jobs, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.sessions, partitions, {"cleanup.policy": "compact"}),
            TopicSpec(self.session_events, partitions, events),
            TopicSpec(self.session_results, partitions, events),
            TopicSpec(self.restore_point_events, partitions, events),
            TopicSpec(self.dead_letter, 1, {"max.message.bytes": str(MAX_RECORD_BYTES)}),
        ]

    def repository_specs(
        self, repo: str, shard_count: int, chunk_retention_ms: int
    ) -> list[TopicSpec]:
        """The topics of one repository; chunks has one partition per shard."""
        large = {"max.message.bytes": str(MAX_RECORD_BYTES)}
        return [
            TopicSpec(
                self.chunks(repo),
                shard_count,
                {**large, "retention.ms": str(chunk_retention_ms), "compression.type": "producer"},
            ),
            TopicSpec(self.extents(repo), shard_count, large),
            TopicSpec(self.index(repo), shard_count, {"cleanup.policy": "compact"}),
            TopicSpec(self.lookups(repo), shard_count, {"retention.ms": str(LOOKUP_RETENTION_MS)}),
            TopicSpec(self.commands(repo), 1),
            TopicSpec(self.requests(repo), 1),
            TopicSpec(self.replies(repo), 1, large),
            TopicSpec(self.lookup_replies(repo), 1),
            TopicSpec(
                self.restore(repo), shard_count, {**large, "retention.ms": str(chunk_retention_ms)}
            ),
        ]
