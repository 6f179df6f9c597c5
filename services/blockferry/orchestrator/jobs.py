"""Job definitions: what to back up, where to, when, and how long to keep it.

A job names its VMs and each VM's disks. A disk's stable name in the repository is
``<vm>.<disk>``: restore points, parents and changed-block tracking follow that name,
never the source path, so a disk can move without starting its chain again. Jobs come
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blockferry.core.errors import ConfigError
from blockferry.orchestrator.models import NAME, Compression

MAX_NAME = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Vm(_Strict):
    name: str = Field(pattern=NAME)
    disks: list[Disk] = Field(min_length=1)

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


class Job(_Strict):
    name: str = Field(pattern=NAME)
    repository: str = Field("default", pattern=NAME)
    compression: Compression = "optimal"
    vms: list[Vm] = Field(min_length=1)
    schedule: Schedule | None = Field(None, description="None: the job runs when started.")
    retention: Retention | None = Field(None, description="None: every restore point is kept.")
    enabled: bool = Field(True, description="A disabled job is not run by its schedule.")

    @field_validator("vms")
    @classmethod
    def _unique_vms(cls, vms: list[Vm]) -> list[Vm]:
        _require_unique("vm", [vm.name for vm in vms])
        for vm in vms:
            for disk in vm.disks:
                if len(disk_name(vm, disk)) > MAX_NAME:
                    raise ValueError(
                        f"{vm.name}.{disk.name}: a VM and disk name together take at most"
                        f" {MAX_NAME - 1} characters"
                    )
        return vms

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
