"""The orchestrator's own state on Kafka: its jobs (``<p>.jobs``) and its sessions with
what running each needs (``<p>.sessions``), as typed records on compacted topics.

Orchestrators before this release wrote the job and the session as JSON inside a
JobDefinition or SessionRecord; those are still read (until a newer record of the same
key replaces them), never written.
"""

from __future__ import annotations

from pydantic import Field

from blockferry.orchestrator.jobs import GuestAccess, GuestProcessing, Job, Snapshot
from blockferry.orchestrator.models import Session
from blockferry.transport.records import ChangedRangesRef, Message


class GuestPlan(Message):
    """A backup's guest processing: the job's scripts, and how to reach each VM's guest."""

    processing: GuestProcessing
    access: dict[str, GuestAccess] = Field(description="By VM.")


class SessionPlan(Message):
    """What running a session needs beyond the session itself, fixed when it begins."""

    restore_point: str | None = Field(
        None,
        description="Backup: the id it commits as (a copy: its source's). Restore: the"
        " restore point read.",
    )
    compression: str = "optimal"
    changed_ranges_pages: ChangedRangesRef | None = Field(
        None, description="Backup of one disk: the operator's changed-ranges map."
    )
    dirty_bitmaps: dict[str, str] = Field(
        default_factory=dict, description="Backup: by disk, the NBD dirty bitmap to read."
    )
    guest: GuestPlan | None = Field(None, description="Backup: None when no scripts run.")
    snapshot: Snapshot = Field(default_factory=Snapshot)
    force: bool = Field(False, description="Restore: replace an existing destination.")
    allow_holes: bool = Field(False, description="Restore: leave damaged blocks as zeros.")
    created: str | None = Field(
        None, description="Copy: its source's creation time, which the copy keeps."
    )


class StoredSession(Message):
    """A session as the orchestrator keeps it (key: its id; a tombstone forgets it)."""

    session_id: str
    session: Session
    plan: SessionPlan


class StoredJob(Message):
    """A job defined through the API (key: its name; a tombstone deletes it)."""

    name: str
    job: Job
    updated: str = Field(description="When it was written, ISO 8601 UTC.")
