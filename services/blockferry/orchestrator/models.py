"""What the orchestrator's REST API takes and returns."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from dataclasses_avroschema.pydantic import AvroBaseModel
from pydantic import BaseModel, Field, PrivateAttr, computed_field, field_validator

from blockferry.core.restore_point_uri import is_restore_point_uri
from blockferry.transport.commands import GuestStep, PruneResult
from blockferry.transport.records import NAMESPACE

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Compression = Literal["none", "fast", "optimal", "high", "extreme"]

SessionState = Literal[
    "pending",
    "guest-freeze",
    "snapshot",
    "guest-thaw",
    "transferring",
    "committing",
    "success",
    "warning",
    "failed",
    "cancelled",
]
"""``warning``: a backup committed, but something needs the operator's eye (a disk that
failed, a guest script that failed, a snapshot taken after its freeze limit expired)."""
ENDED = ("success", "warning", "failed", "cancelled")
TaskState = Literal["pending", "transferring", "success", "failed", "cancelled"]


MAX_LONG = 2**63 - 1


class ByteRange(BaseModel):
    """A changed byte range of a disk."""

    offset: int = Field(ge=0, le=MAX_LONG)
    length: int = Field(ge=0, le=MAX_LONG)


class RangesSince(BaseModel):
    """A changed-ranges map that names the restore point it lists the changes since."""

    since: str = Field(description="The restore point the ranges changed since.")
    ranges: list[ByteRange]


class BackupRequest(BaseModel):
    source: str = Field(
        description="A raw image file or block device the movers can read, or an NBD URI"
        " (nbd://host:port/export, nbd+unix:///export?socket=PATH).",
    )
    repository: str = Field("default", pattern=NAME)
    job: str = Field("default", pattern=NAME)
    disk: str = Field(pattern=NAME, description="The disk's stable name in the job.")
    compression: Compression = "optimal"
    full: bool = Field(False, description="Read and send every block, even with a parent.")
    dirty_bitmap: str | None = Field(
        None,
        description="NBD sources: the QEMU dirty bitmap of the changes since the parent,"
        " named after the parent restore point.",
    )
    changed_ranges: list[ByteRange] | RangesSince | None = Field(
        None,
        description="The blocks changed since the parent: a list of {offset, length} byte"
        " ranges, or {since: RESTORE_POINT, ranges: [...]}. Any number of ranges: the map"
        " travels to the movers in pages.",
    )

    @field_validator("source")
    @classmethod
    def _not_a_restore_point(cls, source: str) -> str:
        if is_restore_point_uri(source):
            raise ValueError("a restore point is copied (POST /api/v1/copies), not backed up")
        return source

    def changed_ranges_map(self) -> tuple[str | None, list[tuple[int, int]]] | None:
        """The map as (since, [(offset, length), ...]); None when there is none."""
        if self.changed_ranges is None:
            return None
        if isinstance(self.changed_ranges, RangesSince):
            since, ranges = self.changed_ranges.since, self.changed_ranges.ranges
        else:
            since, ranges = None, self.changed_ranges
        return since, [(r.offset, r.length) for r in ranges]


class CopyRequest(BaseModel):
    restore_point: str
    repository: str = Field("default", pattern=NAME, description="Where it is.")
    to: str = Field(pattern=NAME, description="The repository it is copied to.")
    compression: Compression = "optimal"
    full: bool = Field(
        False, description="Read every block, even with a restore point of the job there."
    )


class RestoreRequest(BaseModel):
    restore_point: str
    destination: str = Field(description="File or block device the movers write.")
    repository: str = Field("default", pattern=NAME)
    disk: str | None = Field(None, pattern=NAME, description="Needed when it has several disks.")
    force: bool = Field(False, description="Replace an existing destination file.")
    allow_holes: bool = Field(
        False,
        description="Restore every block that can be read and leave those whose chunk is"
        " damaged or missing as zeros, listed in the session's warnings (block numbers and"
        " byte ranges), instead of failing.",
    )


class GcRequest(BaseModel):
    repository: str = Field("default", pattern=NAME)
    dry_run: bool = Field(False, description="Say what would be removed; remove nothing.")


class VerifyRequest(BaseModel):
    repository: str = Field("default", pattern=NAME)
    restore_point: str | None = None


class _Stored(AvroBaseModel):
    """A part of a session: a model with an Avro schema too (a session is stored as a
    record, see :mod:`blockferry.orchestrator.state`). Times keep milliseconds."""

    class Meta:
        namespace = NAMESPACE


class SessionTask(_Stored):
    """One disk of a session: read by a source mover (backup) or written (restore)."""

    disk: str = Field(description="The disk's stable name in the job.")
    path: str = Field(description="Backup: the source. Restore: where it is written.")
    snapshot: str | None = Field(
        None, description="Backup: the snapshot of the source the movers read, while it exists."
    )
    state: TaskState = "pending"
    attempt: int = Field(0, description="Offers of the task to the movers so far, minus one.")
    parent: str | None = Field(None, description="The restore point an incremental builds on.")
    tracking: str = Field(
        "",
        description="How changes were found: full, changed-ranges, dirty-bitmap,"
        " digest-compare or (a copy) source-digests.",
    )
    warnings: list[str] = Field(default_factory=list)
    error: str = ""
    blocks_total: int = 0
    blocks_done: int = 0
    counters: dict[str, int] = Field(default_factory=dict)


SessionKind = Literal["backup", "restore", "copy"]
"""A copy backs up a restore point of another repository: it writes as a backup does."""


class Session(_Stored):
    """One run of a job (or an ad-hoc backup or restore): its disks run as parallel tasks,
    and a backup commits the disks that succeeded as one restore point."""

    id: str
    kind: SessionKind
    state: SessionState = "pending"
    repository: str
    job: str
    created: datetime
    generation: int | None = Field(
        None,
        description="A backup: the repository's generation when it began (garbage"
        " collection keeps the packs sealed since).",
    )
    finished: datetime | None = None
    seconds: float = 0.0
    restore_point: str | None = None
    scheduled_for: datetime | None = Field(
        None, description="The scheduled run of its job this session is; None: started by hand."
    )
    warnings: list[str] = Field(default_factory=list)
    error: str = ""
    cancel_requested: bool = False
    epoch: int = Field(
        0,
        description="Counts up each time an orchestrator runs the session (a restarted one"
        " carries it on under the next): tasks and guest commands an earlier run sent are"
        " refused once a role has read the newer run's.",
    )
    tasks: list[SessionTask] = Field(default_factory=list)
    steps: list[GuestStep] = Field(
        default_factory=list, description="Guest scripts and snapshot commands, in order."
    )
    pruned: PruneResult | None = Field(
        None, description="A job's backup: what its retention policy removed after it."
    )
    _waiting: str = PrivateAttr("")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def waiting(self) -> str:
        """What the running session waits for that is out of its hands now (the link to
        another site: :mod:`blockferry.transport.link`); empty otherwise. Not stored."""
        return "" if self.ended else self._waiting

    def set_waiting(self, reason: str) -> None:
        self._waiting = reason

    @computed_field  # type: ignore[prop-decorator]
    @property
    def blocks_total(self) -> int:
        return sum(task.blocks_total for task in self.tasks)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def blocks_done(self) -> int:
        return sum(task.blocks_done for task in self.tasks)

    @property
    def writes(self) -> bool:
        """It stores a restore point (a backup or a copy), not reads one."""
        return self.kind != "restore"

    @property
    def ended(self) -> bool:
        return self.state in ENDED
