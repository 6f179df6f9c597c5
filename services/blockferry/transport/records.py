"""The records on the bus: one frozen model per Avro record type of ``schemas/``.

A model's name is its schema's name and its fields are the schema's, in order, with
the same defaults: the schema generated from the model has the parsing canonical form
of the committed ``.avsc`` (a test checks every one). The codec decodes every record
into its model once, at the boundary; roles read attributes, never dicts, and build
models to produce. Command arguments and results are models too
(:mod:`~blockferry.transport.commands`), carried inside Command and Reply as Avro.
"""

from __future__ import annotations

import enum

from dataclasses_avroschema import types
from dataclasses_avroschema.pydantic import AvroBaseModel
from pydantic import ConfigDict, Field

NAMESPACE = "io.blockferry.v1"


class Message(AvroBaseModel):
    """An Avro record as a frozen model; the codec finds its schema by the class's name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    class Meta:
        namespace = NAMESPACE


def message_types() -> dict[str, type[Message]]:
    """Every model, by name (its schema's name)."""
    found: dict[str, type[Message]] = {}
    pending: list[type[Message]] = [Message]
    while pending:
        for sub in pending.pop().__subclasses__():
            found[sub.__name__] = sub
            pending.append(sub)
    return found


class ChangedRangesPage(Message):
    session_id: str
    map_id: str
    page: types.Int32
    pages: types.Int32
    since: str | None = None
    offsets: list[int]
    lengths: list[int]


class Chunk(Message):
    session_id: str
    digest: bytes
    compressed: bool
    plain_size: types.Int32
    checksum: int
    data: bytes


class Command(Message):
    command_id: str
    name: str
    arguments: bytes
    issued_at: int = 0
    expires_at: int = 0
    session_id: str = ""
    epoch: types.Int32 = 0


class DeadLetter(Message):
    topic: str
    partition: types.Int32
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    reason: str
    consumer: str
    value_length: int = -1
    value_sha256: str = ""


class DiskEnd(Message):
    session_id: str
    task_id: str
    job: str
    disk: str
    disk_size: int
    block_size: types.Int32
    extent_records: types.Int32
    parent: str | None = None
    attempt: types.Int32 = 0
    error: str = ""


class Extents(Message):
    session_id: str
    disk: str
    seq: types.Int32
    blocks: list[int]
    digests: bytes


class FixedIndexPage(Message):
    correlation_id: str
    disk_size: int
    block_size: types.Int32
    first_block: int
    digests: bytes
    last: bool


class IndexEntry(Message):
    digest: bytes
    pack_id: str
    offset: int
    stored_size: types.Int32
    plain_size: types.Int32
    compressed: bool


class JobDefinition(Message):
    name: str
    definition: str
    updated: str


class LookupReply(Message):
    correlation_id: str
    request_id: str
    known: bytes


class LookupRequest(Message):
    request_id: str
    reply_to: str
    deadline_ms: int
    digests: bytes


class Reply(Message):
    correlation_id: str
    name: str
    ok: bool
    error: str = ""
    result: bytes = b""
    code: str = ""


class RepositoryInfo(Message):
    name: str
    repository_id: str
    block_size: types.Int32
    shard_count: types.Int32
    owner: str
    dedupe_key_fingerprint: str = ""


class RestoreBlock(Message):
    session_id: str
    block: int
    digest: bytes
    compressed: bool
    plain_size: types.Int32
    checksum: int
    data: bytes
    attempt_id: str = ""


class RestoreEnd(Message):
    session_id: str
    blocks_sent: int
    error: str = ""
    attempt_id: str = ""
    damaged: list[int] = Field(default_factory=list)


class RestoreStart(Message):
    session_id: str
    disk: str
    disk_size: int
    block_size: types.Int32
    attempt_id: str = ""
    attempt: types.Int32 = 0


class ResumeQuery(Message):
    session_id: str
    disk: str
    attempt: types.Int32


class SessionEvent(Message):
    session_id: str
    at: str
    job: str
    disk: str = ""
    state: str
    message: str = ""


class SessionEnded(Message):
    """Public: one session's end (topic <p>.session-results, key = session id)."""

    session_id: str
    kind: str
    repository: str
    job: str
    state: str
    created: str
    finished: str
    seconds: float
    restore_point: str | None = None
    disks: list[str]
    failed_disks: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    error: str = ""


class RestorePointDisk(Message):
    name: str
    size: int


class RestorePointCommitted(Message):
    """Public: a restore point committed (topic <p>.restore-points-committed, key =
    repository and restore point id)."""

    repository: str
    job: str
    restore_point: str
    session_id: str
    created: str
    parent: str | None = None
    disks: list[RestorePointDisk]


class SessionRecord(Message):
    session_id: str
    session: str
    plan: str


class ChangedRangesRef(Message):
    map_id: str
    partition: types.Int32
    first_offset: int
    last_offset: int
    pages: types.Int32
    ranges: int


class TaskKind(enum.StrEnum):
    backup = "backup"
    restore = "restore"


class Task(Message):
    task_id: str
    session_id: str
    kind: TaskKind
    attempt: types.Int32
    repository: str
    job: str
    disk: str
    path: str
    compression: str = "optimal"
    restore_point: str | None = None
    force: bool = False
    lease_seconds: types.Int32 = 30
    parent: str | None = None
    dirty_bitmap: str = ""
    allow_holes: bool = False
    changed_ranges_pages: ChangedRangesRef | None = None
    issued_at: int = 0
    expires_at: int = 0
    epoch: types.Int32 = 0


class TaskState(enum.StrEnum):
    accepted = "accepted"
    running = "running"
    done = "done"
    failed = "failed"


class TaskProgress(Message):
    task_id: str
    session_id: str
    attempt: types.Int32
    mover: str
    state: TaskState
    blocks_total: int = 0
    blocks_done: int = 0
    counters: dict[str, int] = Field(default_factory=dict)
    message: str = ""
    tracking: str = ""
    warnings: list[str] = Field(default_factory=list)
