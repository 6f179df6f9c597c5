"""Where jobs live: the jobs file (read-only through the API) and the jobs defined through
the API, kept on the compacted jobs topic so they outlive the orchestrator."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from blockferry.core.errors import ConfigError
from blockferry.mesh import Mesh
from blockferry.orchestrator.jobs import Job, field_errors, load_jobs_file
from blockferry.orchestrator.state import StoredJob
from blockferry.repository.ids import format_time, utc_now
from blockferry.transport.kafka import Record
from blockferry.transport.records import JobDefinition

log = logging.getLogger(__name__)

FILE = "file"
API = "api"


class JobConflict(ConfigError):
    """The job cannot be written: it comes from the jobs file, or exists already."""


class JobStore:
    def __init__(self, mesh: Mesh, jobs_file: Path | None) -> None:
        self._mesh = mesh
        self._jobs_file = jobs_file
        self._from_file: dict[str, Job] = {}
        self._from_api: dict[str, Job] = {}
        self._consumer = mesh.consumer("jobs")
        self._topic = mesh.topics.jobs

    async def start(self) -> None:
        """Read the jobs file, then every job on the jobs topic, before serving any."""
        if self._jobs_file is not None:
            self._from_file = {job.name: job for job in load_jobs_file(self._jobs_file)}
            log.info("%d jobs from %s", len(self._from_file), self._jobs_file)
        await self._consumer.start()
        await self._consumer.assign_all_from_start(self._topic)
        for record in await self._consumer.read_to_end():
            self._apply(record)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Follow the jobs topic (writes by another orchestrator instance)."""
        async for batch in self._consumer.batches(timeout_ms=500):
            for record in batch:
                self._apply(record)

    def _apply(self, record: Record) -> None:
        name = (record.key or b"").decode(errors="replace")
        if record.value is None:
            self._from_api.pop(name, None)
            return
        if isinstance(record.value, StoredJob):
            self._from_api[name] = record.value.job
            return
        if not isinstance(record.value, JobDefinition):
            return
        try:  # written as JSON by an orchestrator before typed records
            self._from_api[name] = Job.model_validate_json(record.value.definition)
        except ValidationError as exc:
            # written by a release whose job model differed: kept aside, not run
            log.error("job %s on %s is not valid here: %s", name, self._topic, field_errors(exc))

    def all(self) -> list[tuple[Job, str]]:
        """Every job with where it is defined (``file`` or ``api``), by name."""
        jobs = [(job, API) for job in self._from_api.values() if job.name not in self._from_file]
        jobs += [(job, FILE) for job in self._from_file.values()]
        return sorted(jobs, key=lambda pair: pair[0].name)

    def get(self, name: str) -> tuple[Job, str] | None:
        if name in self._from_file:
            return self._from_file[name], FILE
        if name in self._from_api:
            return self._from_api[name], API
        return None

    async def put(self, job: Job, create: bool) -> None:
        """Write an API job; ``create``: only if no job has its name yet."""
        self._writable(job.name)
        if create and job.name in self._from_api:
            raise JobConflict(f"job {job.name} exists already; PUT /jobs/{job.name} replaces it")
        definition = StoredJob(name=job.name, job=job, updated=format_time(utc_now()))
        await self._mesh.producer.send_and_wait(self._topic, definition, key=job.name)
        self._from_api[job.name] = job

    async def delete(self, name: str) -> bool:
        """Delete an API job; False if there is none of that name."""
        self._writable(name)
        if name not in self._from_api:
            return False
        await self._mesh.producer.send_and_wait(self._topic, None, key=name)
        self._from_api.pop(name, None)
        return True

    def _writable(self, name: str) -> None:
        if name in self._from_file:
            raise JobConflict(
                f"job {name} is defined in the jobs file {self._jobs_file}: change it there"
            )
