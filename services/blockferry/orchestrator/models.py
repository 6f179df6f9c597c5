"""What the orchestrator's REST API takes and returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Compression = Literal["none", "fast", "optimal", "high", "extreme"]

SessionState = Literal["pending", "transferring", "committing", "success", "warning", "failed"]
"""``warning``: a backup committed the disks that succeeded while others failed."""
ENDED = ("success", "warning", "failed")
TaskState = Literal["pending", "transferring", "success", "failed"]


class BackupRequest(BaseModel):
    source: str = Field(
        description="A raw image file or block device the movers can read, or an NBD URI"
        " (nbd://host:port/export, nbd+unix:///export?socket=PATH)."
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
    changed_ranges: list[dict[str, int]] | dict[str, Any] | None = Field(
        None,
        description="The blocks changed since the parent: a list of {offset, length} byte"
        " ranges, or {since: RESTORE_POINT, ranges: [...]}.",
    )


class RestoreRequest(BaseModel):
    restore_point: str
    destination: str = Field(description="File or block device the movers write.")
    repository: str = Field("default", pattern=NAME)
    disk: str | None = Field(None, pattern=NAME, description="Needed when it has several disks.")
    force: bool = Field(False, description="Replace an existing destination file.")


class GcRequest(BaseModel):
    repository: str = Field("default", pattern=NAME)
    dry_run: bool = Field(False, description="Say what would be removed; remove nothing.")


class VerifyRequest(BaseModel):
    repository: str = Field("default", pattern=NAME)
    restore_point: str | None = None


class SessionTask(BaseModel):
    """One disk of a session: read by a source mover (backup) or written (restore)."""

    disk: str = Field(description="The disk's stable name in the job.")
    path: str = Field(description="Backup: what is read. Restore: where it is written.")
    state: TaskState = "pending"
    attempt: int = Field(0, description="Offers of the task to the movers so far, minus one.")
    parent: str | None = Field(None, description="The restore point an incremental builds on.")
    tracking: str = Field(
        "",
        description="How changes were found: full, changed-ranges, dirty-bitmap or digest-compare.",
    )
    warnings: list[str] = Field(default_factory=list)
    error: str = ""
    blocks_total: int = 0
    blocks_done: int = 0
    counters: dict[str, int] = Field(default_factory=dict)


class Session(BaseModel):
    """One run of a job (or an ad-hoc backup or restore): its disks run as parallel tasks,
    and a backup commits the disks that succeeded as one restore point."""

    id: str
    kind: Literal["backup", "restore"]
    state: SessionState = "pending"
    repository: str
    job: str
    created: datetime
    finished: datetime | None = None
    seconds: float = 0.0
    restore_point: str | None = None
    scheduled_for: datetime | None = Field(
        None, description="The scheduled run of its job this session is; None: started by hand."
    )
    warnings: list[str] = Field(default_factory=list)
    error: str = ""
    tasks: list[SessionTask] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def blocks_total(self) -> int:
        return sum(task.blocks_total for task in self.tasks)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def blocks_done(self) -> int:
        return sum(task.blocks_done for task in self.tasks)

    @property
    def ended(self) -> bool:
        return self.state in ENDED
