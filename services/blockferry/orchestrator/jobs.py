"""Job definitions: what to back up, where to, when, and how long to keep it.

A job names its VMs and each VM's disks. A disk's stable name in the repository is
``<vm>.<disk>``: restore points, parents and changed-block tracking follow that name,
never the source path, so a disk can move without starting its chain again. Two disks
of one job must not share that name (VM ``a.b`` with disk ``c`` and VM ``a`` with disk
``b.c`` are both ``a.b.c``): they would write one fixed index of one restore point and
follow one chain, so such a job is refused naming both. Restore points are kept per
job (``restorepoints/<job>/``), so the same name in two jobs is no collision: it is
how one disk is backed up by two jobs. Jobs come
from a YAML file (read-only through the API) and from the REST API; both go through
the same models, so both get the same field-level errors.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError
from dataclasses_avroschema.pydantic import AvroBaseModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blockferry.core.errors import ConfigError
from blockferry.orchestrator.models import NAME, Compression
from blockferry.transport.records import NAMESPACE

MAX_NAME = 128


class _Strict(AvroBaseModel):
    """A part of a job: a model with an Avro schema too (a job is stored as a record)."""

    model_config = ConfigDict(extra="forbid")

    class Meta:
        namespace = NAMESPACE


class Disk(_Strict):
    name: str = Field(pattern=NAME, description="The disk's stable name within its VM.")
    source: str = Field(
        min_length=1,
        description="What the source movers read: a raw image file, block device or qcow2"
        " image, or an NBD URI (nbd://host:port/export, nbd+unix:///export?socket=PATH).",
    )
    dirty_bitmap: str | None = Field(
        None,
        description="NBD sources: the QEMU dirty bitmap of the changes since the parent,"
        " named after the parent restore point.",
    )


class GuestAccess(_Strict):
    """How the guest-proxy reaches a VM's guest to run its scripts. The SSH key and the
    known host keys are the guest-proxy's settings, never part of a job."""

    connection: Literal["ssh", "local"] = Field(
        "ssh",
        description="ssh: over SSH with key authentication against known host keys;"
        " local: on the guest-proxy's own host (a guest-proxy placed in the guest).",
    )
    host: str | None = Field(None, min_length=1, max_length=253, description="ssh: the guest.")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field("root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")

    @model_validator(mode="after")
    def _ssh_has_host(self) -> GuestAccess:
        if self.connection == "ssh" and not self.host:
            raise ValueError("an ssh connection needs the guest's host")
        return self


class Vm(_Strict):
    name: str = Field(pattern=NAME)
    disks: list[Disk] = Field(min_length=1)
    guest: GuestAccess | None = Field(
        None, description="Where the job's guest scripts run for this VM."
    )

    @field_validator("disks")
    @classmethod
    def _unique_disks(cls, disks: list[Disk]) -> list[Disk]:
        _require_unique("disk", [d.name for d in disks])
        return disks


class Schedule(_Strict):
    cron: str = Field(
        description="Five-field cron expression (minute hour day-of-month month"
        " day-of-week), as Debian's cron reads it.",
        examples=["30 1 * * *"],
    )
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")
    missed: Literal["skip", "run-once"] = Field(
        "run-once",
        description="A run missed while the orchestrator was down: run it once when it is"
        " back, or skip to the next one.",
    )
    overlap: Literal["skip", "queue"] = Field(
        "skip",
        description="A run due while the previous one still runs: skip it, or start it"
        " when the previous one ends.",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        try:
            CronSim(cron, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"not a cron expression: {exc}") from exc
        return cron

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, timezone: str) -> str:
        return _known_zone(timezone)

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after ``after`` (an aware datetime)."""
        local = after.astimezone(ZoneInfo(self.timezone))
        found: datetime = next(CronSim(self.cron, local))
        return found

    def interval(self, after: datetime) -> float:
        """Seconds between the first two runs after ``after``."""
        first = self.next_run(after)
        return (self.next_run(first) - first).total_seconds()


def _known_zone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc
    return timezone


class Retention(_Strict):
    """Restore points kept: the newest ``keep_last``, plus the newest of each of the last
    ``daily`` days, ``weekly`` ISO weeks, ``monthly`` months and ``yearly`` years that
    have one (GFS). The newest restore point of each disk is never removed."""

    keep_last: int = Field(0, ge=0, le=10000)
    daily: int = Field(0, ge=0, le=10000)
    weekly: int = Field(0, ge=0, le=10000)
    monthly: int = Field(0, ge=0, le=10000)
    yearly: int = Field(0, ge=0, le=10000)
    timezone: str = Field("UTC", description="Where days, weeks, months and years begin.")

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, timezone: str) -> str:
        return _known_zone(timezone)

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if not any((self.keep_last, self.daily, self.weekly, self.monthly, self.yearly)):
            raise ValueError(
                "keeps nothing: set keep_last or one of daily, weekly, monthly, yearly"
                " (leave retention out to keep every restore point)"
            )
        return self


class GuestProcessing(_Strict):
    """Application-aware processing: scripts run on each VM's guest around the snapshot."""

    pre_freeze: str | None = Field(
        None,
        min_length=1,
        description="Shell command run on the guest before the snapshot (flush and freeze"
        " the applications); it must end within the freeze limit.",
    )
    post_thaw: str | None = Field(
        None,
        min_length=1,
        description="Shell command run on the guest after the snapshot. It runs once the"
        " freeze has begun, whatever happens: when the snapshot is taken, when the freeze"
        " limit expires (the guest runs it by itself if the guest-proxy is gone).",
    )
    freeze_limit_s: float = Field(
        60.0, ge=1, le=3600, description="The longest a guest may stay frozen."
    )
    on_failure: Literal["ignore", "warn", "fail"] = Field(
        "warn",
        description="A script that fails: ignore it, warn in the session, or fail the"
        " session (the disks are not read).",
    )

    @model_validator(mode="after")
    def _has_a_script(self) -> GuestProcessing:
        if not self.pre_freeze and not self.post_thaw:
            raise ValueError("give pre_freeze, post_thaw or both")
        return self


class Snapshot(_Strict):
    """How a consistent copy of the disks is made before they are read."""

    provider: Literal["none", "file-copy", "command"] = Field(
        "none",
        description="none: read the source as it is, which is only correct for a source"
        " nobody writes (a stopped VM's image); file-copy: a copy-on-write copy (reflink)"
        " of each disk image next to it, else a plain copy; command: the create and delete"
        " commands below.",
    )
    create: str | None = Field(
        None,
        min_length=1,
        description="command: shell command that makes a snapshot of one disk and prints"
        " its path (last line of its output). It gets BLOCKFERRY_SOURCE, BLOCKFERRY_DISK"
        " and BLOCKFERRY_SESSION in its environment.",
    )
    delete: str | None = Field(
        None,
        min_length=1,
        description="command: shell command that deletes the snapshot named by"
        " BLOCKFERRY_SNAPSHOT (with the same variables as create).",
    )
    timeout_s: float = Field(300.0, ge=1, le=86400, description="Limit of each command.")

    @model_validator(mode="after")
    def _commands_given(self) -> Snapshot:
        if self.provider == "command" and not (self.create and self.delete):
            raise ValueError("the command provider needs both create and delete")
        if self.provider != "command" and (self.create or self.delete):
            raise ValueError("create and delete are only for the command provider")
        return self


class CopyFrom(_Strict):
    """A copy job's source: the restore points of another job, in another repository."""

    job: str = Field(pattern=NAME, description="The job whose restore points are copied.")
    repository: str = Field("default", pattern=NAME, description="Where they are.")
    after_source: bool = Field(
        False, description="Run right after each session of the source job that stored one."
    )


class Job(_Strict):
    name: str = Field(pattern=NAME)
    repository: str = Field(
        "default", pattern=NAME, description="Where it stores (a copy job: copies to)."
    )
    compression: Compression = "optimal"
    vms: list[Vm] = Field(default_factory=list, description="What a backup job backs up.")
    copy_from: CopyFrom | None = Field(
        None,
        description="A copy job: the restore points of another job that it copies, those not"
        " in this job's repository yet, oldest first; they keep that job's name there.",
    )
    schedule: Schedule | None = Field(None, description="None: the job runs when started.")
    retention: Retention | None = Field(None, description="None: every restore point is kept.")
    enabled: bool = Field(True, description="A disabled job is not run by its schedule.")
    guest_processing: GuestProcessing | None = Field(
        None, description="None: no scripts run on the guests."
    )
    snapshot: Snapshot = Field(default_factory=Snapshot)
    catalog: bool = Field(
        False,
        description="After each backup, list every file of its disks into a catalog, so"
        " `blockferry files find` answers which restore points hold a file.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Job:
        if self.copy_from is None and not self.vms:
            raise ValueError("a job backs up vms, or copies restore points (copy_from)")
        if self.copy_from is not None:
            if self.vms or self.guest_processing or self.snapshot.provider != "none":
                raise ValueError(
                    "a copy job copies restore points: it has no vms, guest_processing or snapshot"
                )
            if self.copy_from.repository == self.repository:
                raise ValueError("a copy job copies to another repository than its source's")
        if self.guest_processing is not None:
            missing = [vm.name for vm in self.vms if vm.guest is None]
            if missing:
                raise ValueError(
                    f"guest_processing needs every VM's guest access; missing for"
                    f" {', '.join(missing)}"
                )
        if self.snapshot.provider == "file-copy":
            nbd = [disk_name(vm, d) for vm in self.vms for d in vm.disks if "://" in d.source]
            if nbd:
                raise ValueError(
                    f"the file-copy snapshot copies image files; {', '.join(nbd)} are NBD"
                    " exports (use the command provider)"
                )
        return self

    @field_validator("vms")
    @classmethod
    def _unique_vms(cls, vms: list[Vm]) -> list[Vm]:
        _require_unique("vm", [vm.name for vm in vms])
        named: dict[str, str] = {}
        for vm in vms:
            for disk in vm.disks:
                name = disk_name(vm, disk)
                if len(name) > MAX_NAME:
                    raise ValueError(
                        f"{vm.name}.{disk.name}: a VM and disk name together take at most"
                        f" {MAX_NAME - 1} characters"
                    )
                this = f"VM {vm.name!r} disk {disk.name!r}"
                if name in named:
                    raise ValueError(
                        f"{named[name]} and {this} are both named {name!r} in the"
                        " repository: rename one of them"
                    )
                named[name] = this
        return vms

    @property
    def stored_as(self) -> tuple[str, str]:
        """(repository, job) of the restore points it makes: a copy job's are its
        source job's."""
        return self.repository, self.copy_from.job if self.copy_from else self.name

    def disks(self) -> list[tuple[str, Disk]]:
        """Every disk with its stable name in the repository (``<vm>.<disk>``)."""
        return [(disk_name(vm, disk), disk) for vm in self.vms for disk in vm.disks]


class PruneRequest(_Strict):
    repository: str = Field("default", pattern=NAME)
    job: str = Field(pattern=NAME)
    retention: Retention | None = Field(None, description="None: the job's own retention.")
    dry_run: bool = Field(False, description="Say what would be removed; remove nothing.")


class JobView(BaseModel):
    """A job as the API shows it."""

    job: Job
    origin: Literal["file", "api"] = Field(
        description="file: from the jobs file, read-only here; api: defined through the API."
    )
    next_run: datetime | None = Field(None, description="When its schedule runs it next.")
    running: str | None = Field(None, description="The session running it now, if any.")


def disk_name(vm: Vm, disk: Disk) -> str:
    return f"{vm.name}.{disk.name}"


def _require_unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name {name!r} appears twice")
        seen.add(name)


class JobsFile(_Strict):
    jobs: Annotated[list[Job], Field(default_factory=list)]

    @field_validator("jobs")
    @classmethod
    def _unique_jobs(cls, jobs: list[Job]) -> list[Job]:
        _require_unique("job", [job.name for job in jobs])
        return jobs


def field_errors(exc: ValidationError) -> list[str]:
    """One line per error: the field's path and what is wrong with it."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(document)"
        lines.append(f"{where}: {error['msg']}")
    return lines


def load_jobs_file(path: Path) -> list[Job]:
    """The jobs of a YAML file ``{jobs: [...]}``; ConfigError names every bad field."""
    try:
        document: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"reading jobs file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"jobs file {path} is not valid YAML: {exc}") from exc
    try:
        return JobsFile.model_validate(document or {}).jobs
    except ValidationError as exc:
        errors = "\n  ".join(field_errors(exc))
        raise ConfigError(f"jobs file {path} is invalid:\n  {errors}") from exc
