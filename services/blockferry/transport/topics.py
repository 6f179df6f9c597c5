"""Topic names and how each topic is created.

Per repository: ``<p>.<repo>.chunks`` (key = digest; its partition count is the
repository's shard count), ``.extents``, ``.index`` (compacted), ``.lookups``,
``.commands``, ``.replies``, ``.restore``. A digest's shard is the same partition
number in chunks, index and lookups (``kafka.shard_of``). Shared: ``<p>.tasks``,
``<p>.task-progress``, ``<p>.task-control`` (cancellations), ``<p>.repositories``,
``<p>.jobs`` and ``<p>.sessions`` (compacted), ``<p>.session-events`` (history),
``<p>.guest-commands``, ``<p>.guest-events``, ``<p>.dead-letter``.
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
class TopicSpec:
    """A topic to create: name, partitions and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """The topic names of one mesh, from its prefix."""

    prefix: str = "blockferry"

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

    def replies(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.replies"

    def restore(self, repo: str) -> str:
        return f"{self.prefix}.{repo}.restore"

    def shared_specs(self, partitions: int = 4) -> list[TopicSpec]:
        """The topics every mesh has."""
        return [
            TopicSpec(self.tasks, partitions),
            TopicSpec(self.task_progress, partitions),
            TopicSpec(self.task_control, 1, {"retention.ms": str(CONTROL_RETENTION_MS)}),
            TopicSpec(self.guest_commands, partitions),
            TopicSpec(self.guest_events, 1),
            TopicSpec(self.repositories, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.jobs, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.sessions, partitions, {"cleanup.policy": "compact"}),
            TopicSpec(self.session_events, partitions, {"retention.ms": str(EVENTS_RETENTION_MS)}),
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
            TopicSpec(self.replies(repo), 1, large),
            TopicSpec(
                self.restore(repo), shard_count, {**large, "retention.ms": str(chunk_retention_ms)}
            ),
        ]
