"""The commands of the mesh: each one's name, arguments and result as models.

A :class:`CommandSpec` names a command and the models of its arguments and result; a
server registers a handler per spec (:mod:`blockferry.command_server`), and the
:class:`~blockferry.transport.rpc.CommandClient` sends a spec's arguments and returns its
result, typed. Arguments travel inside a Command record and results inside a Reply, each
Avro single-object encoded with its own schema (``schemas/<Model>.avsc``), so a server
decodes them once and refuses arguments of another kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from dataclasses_avroschema import types
from pydantic import Field

from blockferry.transport.records import Message

A = TypeVar("A", bound=Message)
R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class CommandSpec(Generic[A, R]):
    """A command: its name on the bus, its arguments' model and its result's model
    (None: the server answers with records of its own, a stream)."""

    name: str
    arguments: type[A]
    result: type[R] | None


class Done(Message):
    """The result of a command that answers nothing but its success."""


# -- the repository owner's commands, from the orchestrator (<repo>.commands) -----------


class DiskStats(Message):
    """What a backup of one disk counted, as its restore point keeps it."""

    counters: dict[str, int] = Field(
        default_factory=dict, description="Byte and block counters (bytes_read, ...)."
    )
    tracking: str = Field("", description="How the changed blocks were found.")
    parent: str | None = Field(None, description="The restore point it is incremental to.")


class DiskInfo(Message):
    """One disk of a restore point."""

    name: str
    size: int = Field(description="The disk's size in bytes.")
    fidx: str = Field(description="Its fixed index file, in the restore point.")
    fidx_checksum: str = Field(description="The fixed index's xxh3-64, in hex.")


class RestorePointInfo(Message):
    """A committed restore point, as the API shows it."""

    version: types.Int32
    id: str
    job: str
    created: str = Field(description="ISO 8601, UTC.")
    parent: str | None
    session_id: str
    disks: list[DiskInfo]
    stats: dict[str, DiskStats] = Field(default_factory=dict, description="By disk.")


class CommitArguments(Message):
    """Commit what a session staged as a restore point (again: the same one is found)."""

    restore_point: str | None = Field(description="The id to commit as; None: a new one.")
    session_id: str
    job: str
    disks: list[str]
    parent: str | None = None
    stats: dict[str, DiskStats] = Field(default_factory=dict)
    created: str | None = Field(
        None, description="A copy: its source's creation time (ISO 8601, UTC); None: now."
    )


class DiscardArguments(Message):
    """Drop what a session staged: it ended without a restore point."""

    session_id: str


class GcArguments(Message):
    """Garbage collection."""

    keep_since: int | None = Field(
        None,
        description="Keep the packs sealed since this repository generation (the one the"
        " oldest running backup began in).",
    )
    dry_run: bool = False


class GcResult(Message):
    """What garbage collection did (or would do, in a dry run)."""

    packs_removed: int
    packs_repacked: int
    packs_recent: int
    chunks_removed: int
    chunks_moved: int
    bytes_freed: int
    generation: int = Field(0, description="The repository generation this GC began.")
    protected_from: int = Field(
        0, description="Packs sealed in this generation or later were left whole."
    )


class RetentionPolicy(Message):
    """Which restore points of a job to keep."""

    keep_last: types.Int32 = 0
    daily: types.Int32 = 0
    weekly: types.Int32 = 0
    monthly: types.Int32 = 0
    yearly: types.Int32 = 0
    timezone: str = "UTC"


class PruneArguments(Message):
    """Remove the restore points of a job that a policy does not keep."""

    job: str
    policy: RetentionPolicy
    dry_run: bool = False


class PruneResult(Message):
    """The restore points kept (each with why) and those removed."""

    kept: dict[str, list[str]]
    removed: list[str]


class ListRestorePointsArguments(Message):
    """The restore points of a job, or of every job."""

    job: str | None = None


class RestorePointList(Message):
    """Restore points, oldest first."""

    restore_points: list[RestorePointInfo]


class RestorePointArguments(Message):
    """One restore point."""

    restore_point: str


class VerifyArguments(Message):
    """Read back and check a restore point, or every one."""

    restore_point: str | None = None


class Damage(Message):
    """One damaged thing verify found."""

    kind: str = Field(description="restorepoint, fidx, pack, chunk or missing-chunk.")
    path: str = Field(description="Where, relative to the repository.")
    detail: str
    restore_points: list[str] = Field(description="The restore points it affects.")
    digest: str | None = Field(None, description="A damaged chunk's digest, in hex.")
    pack_id: str | None = None


class VerifyReport(Message):
    """What verify checked and found."""

    ok: bool
    restore_points: list[str]
    chunks_checked: int
    bytes_read: int
    damaged_restore_points: list[str]
    damage: list[Damage]
    quarantined: list[str] = Field(description="Digests (hex) of the chunks set aside.")
    summary: str = Field(description="The report for people.")


class LatestRestorePointArguments(Message):
    """The newest restore point of a job's disk: an incremental's parent."""

    job: str
    disk: str


class LatestRestorePoint(Message):
    restore_point: str | None


class DescribeArguments(Message):
    """The repository's parameters."""


class RepositoryDescription(Message):
    id: str
    block_size: types.Int32
    shard_count: types.Int32


class StartGenerationArguments(Message):
    """Begin the repository's next generation: a backup begins, and garbage collection
    keeps the packs sealed from then on while it runs."""


class Generation(Message):
    generation: int = Field(description="The generation begun.")


class FilesArguments(Message):
    """A path in the file systems of a disk of a restore point: its first component names
    the volume (``/p1/etc``); ``/`` lists the volumes."""

    restore_point: str
    disk: str | None = Field(None, description="Needed when the restore point has several.")
    path: str = "/"


class FileEntry(Message):
    """One directory entry of a backed-up file system."""

    path: str
    name: str
    kind: str = Field(description="file, dir, symlink or other.")
    size: int
    mode: str = Field(description="Permission bits, in octal.")
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    target: str | None = Field(None, description="A symlink's target.")
    filesystem: str | None = Field(None, description="A volume's file system type.")


class FileList(Message):
    entries: list[FileEntry]


class ReadFileArguments(Message):
    """``length`` bytes of a regular file from ``offset``."""

    restore_point: str
    disk: str | None = None
    path: str
    offset: int = 0
    length: types.Int32


class FileData(Message):
    data: bytes
    size: int = Field(description="The whole file's size.")


class RestoreFilesArguments(Message):
    """Restore a file or tree into the directory ``destination`` (under a restore root of
    the repository's owner)."""

    restore_point: str
    disk: str | None = None
    path: str
    destination: str
    overwrite: bool = False


class FilesRestored(Message):
    files: int
    dirs: int
    symlinks: int
    bytes: int
    failed: dict[str, str] = Field(default_factory=dict, description="Path: why.")
    skipped: dict[str, str] = Field(default_factory=dict, description="Path: why.")


class StartExportArguments(Message):
    """Serve a disk read-only over NBD, on a Unix socket under a restore root of the
    repository's owner, or on a TCP address (TLS, with the owner's certificates)."""

    restore_point: str
    disk: str | None = None
    socket: str | None = None
    listen: str | None = Field(None, description="HOST:PORT.")


class ExportInfo(Message):
    id: str
    restore_point: str
    disk: str
    uri: str
    lease_s: types.Int32 = Field(description="It stops unless kept alive within this.")


class ExportArguments(Message):
    id: str


class CatalogArguments(Message):
    """Build the file catalog of a restore point."""

    restore_point: str


class CatalogBuilt(Message):
    restore_point: str
    entries: int


class FindArguments(Message):
    """Search the file catalogs: ``pattern`` has shell wildcards and matches a file's
    name, or its whole path when it has a ``/``."""

    pattern: str
    job: str | None = None


class FoundFile(Message):
    restore_point: str
    job: str
    created: str
    disk: str
    path: str
    size: int
    mtime_ns: int


class FoundFiles(Message):
    found: list[FoundFile]
    uncatalogued: list[str] = Field(
        default_factory=list, description="Restore points searched that have no catalog."
    )


COMMIT = CommandSpec("commit", CommitArguments, RestorePointInfo)
DISCARD = CommandSpec("discard", DiscardArguments, Done)
GC = CommandSpec("gc", GcArguments, GcResult)
PRUNE = CommandSpec("prune", PruneArguments, PruneResult)
LIST_RESTORE_POINTS = CommandSpec(
    "list-restore-points", ListRestorePointsArguments, RestorePointList
)
RESTORE_POINT = CommandSpec("restore-point", RestorePointArguments, RestorePointInfo)
VERIFY = CommandSpec("verify", VerifyArguments, VerifyReport)
LATEST_RESTORE_POINT = CommandSpec(
    "latest-restore-point", LatestRestorePointArguments, LatestRestorePoint
)
DESCRIBE = CommandSpec("describe", DescribeArguments, RepositoryDescription)
START_GENERATION = CommandSpec("start-generation", StartGenerationArguments, Generation)
LIST_FILES = CommandSpec("list-files", FilesArguments, FileList)
READ_FILE = CommandSpec("read-file", ReadFileArguments, FileData)
RESTORE_FILES = CommandSpec("restore-files", RestoreFilesArguments, FilesRestored)
START_EXPORT = CommandSpec("start-export", StartExportArguments, ExportInfo)
KEEP_EXPORT = CommandSpec("keep-export", ExportArguments, Done)
STOP_EXPORT = CommandSpec("stop-export", ExportArguments, Done)
BUILD_CATALOG = CommandSpec("build-catalog", CatalogArguments, CatalogBuilt)
FIND_FILES = CommandSpec("find-files", FindArguments, FoundFiles)


# -- the source movers' requests to the owner (<repo>.requests) ---------------------------


class FixedIndexArguments(Message):
    """Stream a restore point's fixed index of a disk as FixedIndexPage records."""

    restore_point: str
    disk: str


class RestoreArguments(Message):
    """Stream a disk of a restore point on the restore topic."""

    session_id: str
    restore_point: str
    disk: str
    attempt_id: str = Field(description="Carried by every record of the stream.")
    attempt: types.Int32 = 0
    blocks: bytes = Field(
        b"",
        description="Only these blocks: a bitmap, a bit a block from block 0, the lowest"
        " bit of each byte first; empty: every block.",
    )


FIXED_INDEX: CommandSpec[FixedIndexArguments, Done] = CommandSpec(
    "fixed-index", FixedIndexArguments, None
)
RESTORE: CommandSpec[RestoreArguments, Done] = CommandSpec("restore", RestoreArguments, None)


# -- the target side's answers to a source mover about a disk (<repo>.replies) -----------
# Replies named after the answer, correlation id <session>/<disk>, each carrying the
# attempt it answers.


class DiskStored(Message):
    """disk-stored: the disk's fixed index is staged (or, not ok, the disk failed)."""

    attempt: types.Int32
    blocks: int = Field(0, description="Blocks in the disk.")


class MissingBlocks(Message):
    """missing-blocks: blocks whose chunks the target side lacks; send them again."""

    attempt: types.Int32
    blocks: list[int]


class ResumePoint(Message):
    """resume-point: where a task offered again resumes."""

    attempt: types.Int32
    stored: bool = Field(False, description="The disk is stored already.")
    block: int = Field(0, description="The first block not durable on the target side.")
    extent_records: types.Int32 = Field(0, description="Extents records sent before it.")


DISK_ANSWERS: dict[str, type[DiskStored | MissingBlocks | ResumePoint]] = {
    "disk-stored": DiskStored,
    "missing-blocks": MissingBlocks,
    "resume-point": ResumePoint,
}
"""The model of each answer, by its Reply's name."""


# -- the guest-proxy's commands, from the orchestrator (guest-commands) -------------------


class GuestAccess(Message):
    """How the guest-proxy reaches a VM's guest (keys are its own settings)."""

    connection: str = Field("ssh", description="ssh, or local: on the guest-proxy's host.")
    host: str | None = None
    port: types.Int32 = 22
    user: str = "root"


class FreezeArguments(Message):
    """Run the pre-freeze script on a VM's guest; it thaws itself at the limit."""

    session_id: str
    vm: str
    access: GuestAccess
    pre_freeze: str | None = None
    post_thaw: str | None = None
    freeze_limit_s: float


class ThawArguments(Message):
    """Run the post-thaw script on a VM's guest, unless it thawed already."""

    session_id: str
    vm: str
    access: GuestAccess
    post_thaw: str | None = None
    timeout_s: float


class GuestStep(Message):
    """A guest script or snapshot command run for a session, and how it ended."""

    action: str = Field(description="freeze, thaw, snapshot or delete-snapshot.")
    vm: str = Field("", description="freeze, thaw: the VM whose guest ran the script.")
    disk: str = Field("", description="snapshot, delete-snapshot: the disk.")
    ok: bool
    exit_code: types.Int32 | None = Field(None, description="None: killed, or never started.")
    timed_out: bool = False
    seconds: float = 0.0
    stdout: str = Field("", description="The tail of what it printed.")
    stderr: str = ""
    message: str = ""


class SnapshotArguments(Message):
    """Take the snapshot of one disk."""

    session_id: str
    disk: str
    source: str
    provider: str
    create: str | None = None
    timeout_s: float
    freeze_limit_s: float | None = None


class SnapshotTaken(Message):
    path: str = Field(description="Where the source movers read the snapshot.")
    kind: str
    warnings: list[str]
    seconds: float


class DeleteSnapshotArguments(Message):
    """Delete a snapshot taken by ``snapshot`` (one already gone is no error)."""

    session_id: str
    disk: str
    source: str
    path: str
    provider: str
    delete: str | None = None
    timeout_s: float


FREEZE = CommandSpec("freeze", FreezeArguments, GuestStep)
THAW = CommandSpec("thaw", ThawArguments, GuestStep)
SNAPSHOT = CommandSpec("snapshot", SnapshotArguments, SnapshotTaken)
DELETE_SNAPSHOT = CommandSpec("delete-snapshot", DeleteSnapshotArguments, Done)


# -- the orchestrator's word to the source movers (task-control) --------------------------


class CancelArguments(Message):
    """Stop the session's tasks."""

    session_id: str


CANCEL: CommandSpec[CancelArguments, Done] = CommandSpec("cancel", CancelArguments, None)
