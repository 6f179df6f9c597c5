"""``jobs`` and ``sessions``: job definitions and their runs, through the orchestrator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from rich.table import Table

from blockferry.cli import main
from blockferry.cli.client import (
    api_client,
    api_option,
    call,
    follow,
    json_option,
    session_document,
)
from blockferry.cli.output import console, emit, fail, show_table


@main.group()
def jobs() -> None:
    """Job definitions: list, show, apply a YAML file, delete, start, stop."""


@jobs.command("list")
@api_option
@json_option
def jobs_list(api_url: str, as_json: bool) -> None:
    """List the jobs with their schedules and next runs."""
    with api_client(api_url) as client:
        found = call(client, "GET", "/api/v1/jobs")
    if as_json:
        click.echo(json.dumps({"jobs": found}))
        return
    table = Table("job", "from", "repository", "disks", "schedule", "next run", "running")
    for view in found:
        job = view["job"]
        schedule = job.get("schedule")
        table.add_row(
            job["name"],
            view["origin"],
            job["repository"],
            str(sum(len(vm["disks"]) for vm in job["vms"])),
            f"{schedule['cron']} ({schedule['timezone']})" if schedule else "-",
            view["next_run"] or "-",
            view["running"] or "",
        )
    show_table(table)


@jobs.command("show")
@click.argument("name")
@api_option
def jobs_show(name: str, api_url: str) -> None:
    """Print job NAME as YAML, in the form ``jobs apply`` takes."""
    with api_client(api_url) as client:
        view = call(client, "GET", f"/api/v1/jobs/{name}")
    click.echo(yaml.safe_dump({"jobs": [view["job"]]}, sort_keys=False), nl=False)


@jobs.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@api_option
@json_option
def jobs_apply(file: Path, api_url: str, as_json: bool) -> None:
    """Create or replace the jobs of FILE (YAML ``{jobs: [...]}``) through the API."""
    try:
        document: Any = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(f"reading {file}: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        fail(f"{file}: expected a mapping with a list under 'jobs'")
    applied = []
    with api_client(api_url) as client:
        for job in document["jobs"]:
            name = job.get("name") if isinstance(job, dict) else None
            if not isinstance(name, str):
                fail(f"{file}: every job needs a name")
            call(client, "PUT", f"/api/v1/jobs/{name}", json=job)
            applied.append(name)
    emit(as_json, {"applied": applied}, f"applied {len(applied)} jobs: {', '.join(applied)}")


@jobs.command("delete")
@click.argument("name")
@api_option
def jobs_delete(name: str, api_url: str) -> None:
    """Delete job NAME (its restore points stay until retention removes them)."""
    with api_client(api_url) as client:
        call(client, "DELETE", f"/api/v1/jobs/{name}")
    click.echo(f"deleted job {name}")


@jobs.command("start")
@click.argument("name")
@click.option("--full", is_flag=True, help="Read and send every block, even with parents.")
@click.option("--wait", is_flag=True, help="Follow the session until it ends.")
@api_option
@json_option
def jobs_start(name: str, full: bool, wait: bool, api_url: str, as_json: bool) -> None:
    """Run job NAME now: one session, its disks side by side, one restore point."""
    start_job(name, full, wait, api_url, as_json)


@jobs.command("stop")
@click.argument("name")
@api_option
def jobs_stop(name: str, api_url: str) -> None:
    """Stop job NAME's running session: it is cancelled and commits nothing."""
    with api_client(api_url) as client:
        session = call(client, "POST", f"/api/v1/jobs/{name}/stop")
    click.echo(f"cancelling session {session['id']} of job {name}")


def start_job(name: str, full: bool, wait: bool, api_url: str, as_json: bool) -> None:
    """Start job ``name``, follow it if ``wait``, and report it."""
    with api_client(api_url) as client:
        session = call(client, "POST", f"/api/v1/jobs/{name}/start", params={"full": full})
        if wait:
            session = follow(client, session, as_json)
    report(session, as_json, wait)


def report(session: dict[str, Any], as_json: bool, ended: bool) -> None:
    """Print a session (a table of its disks); exit 1 when it ended and failed."""
    document = session_document(session)
    if as_json:
        emit(True, document, "")
    else:
        for warning in document["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
        table = Table("disk", "state", "parent", "tracking", "sent", "error")
        for task in session["tasks"]:
            table.add_row(
                task["disk"],
                task["state"],
                task["parent"] or "-",
                task["tracking"],
                str(task["counters"].get("bytes_sent", 0)),
                task["error"],
            )
        show_table(table)
        if session["steps"]:
            steps = Table("step", "vm/disk", "ok", "exit", "seconds", "message")
            for step in session["steps"]:
                steps.add_row(
                    step["action"],
                    step["vm"] or step["disk"],
                    "yes" if step["ok"] else "no",
                    "-" if step["exit_code"] is None else str(step["exit_code"]),
                    f"{step['seconds']:.1f}",
                    step["message"],
                )
            show_table(steps)
        click.echo(
            f"session {session['id']} of job {session['job']}: {session['state']}"
            + (f", restore point {session['restore_point']}" if session["restore_point"] else "")
        )
    if ended and session["state"] in ("failed", "cancelled"):
        fail(f"session {session['id']} {session['state']}: {document['error']}")


@main.group()
def sessions() -> None:
    """Sessions: the runs of jobs, backups and restores."""


@sessions.command("list")
@click.option("--job", help="Only this job's sessions.")
@api_option
@json_option
def sessions_list(job: str | None, api_url: str, as_json: bool) -> None:
    """List the sessions this orchestrator knows, oldest first."""
    with api_client(api_url) as client:
        found = call(client, "GET", "/api/v1/sessions", params={"job": job} if job else {})
    if as_json:
        click.echo(json.dumps({"sessions": [session_document(s) for s in found]}))
        return
    table = Table("session", "job", "kind", "state", "created", "disks", "restore point")
    table.columns[0].no_wrap = True
    for s in found:
        done = sum(task["state"] == "success" for task in s["tasks"])
        table.add_row(
            s["id"],
            s["job"],
            s["kind"],
            s["state"],
            s["created"],
            f"{done}/{len(s['tasks'])}",
            s["restore_point"] or "",
        )
    show_table(table)


@sessions.command("show")
@click.argument("session_id")
@click.option("--follow", "follow_it", is_flag=True, help="Follow the session until it ends.")
@api_option
@json_option
def sessions_show(session_id: str, follow_it: bool, api_url: str, as_json: bool) -> None:
    """Show session SESSION_ID with the state of each disk."""
    with api_client(api_url) as client:
        session = call(client, "GET", f"/api/v1/sessions/{session_id}")
        if follow_it:
            session = follow(client, session, as_json)
    report(session, as_json, follow_it)


@sessions.command("cancel")
@click.argument("session_id")
@api_option
def sessions_cancel(session_id: str, api_url: str) -> None:
    """Cancel session SESSION_ID: its tasks stop and nothing is committed."""
    with api_client(api_url) as client:
        call(client, "POST", f"/api/v1/sessions/{session_id}/cancel")
    click.echo(f"cancelling session {session_id}")
