"""``backup``, ``copy``, ``restore``, ``verify`` and ``restore-points`` through the
orchestrator."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from blockferry.cli import main
from blockferry.cli.client import (
    api_client,
    api_option,
    call,
    destination_option,
    follow,
    json_option,
    repo_option,
    session_document,
)
from blockferry.cli.jobs import start_job
from blockferry.cli.output import console, emit, fail, show_table
from blockferry.core.units import rate, size


@main.command()
@click.argument("source", required=False)
@repo_option
@click.option(
    "--job",
    default="default",
    show_default=True,
    help="The job the disk belongs to; without SOURCE, the job to run.",
)
@click.option("--disk", help="The disk's stable name in the job [default: the source's file name].")
@click.option(
    "--compression",
    type=click.Choice(["none", "fast", "optimal", "high", "extreme"]),
    default="optimal",
    show_default=True,
)
@click.option("--wait", is_flag=True, help="Follow the session until it ends.")
@click.option("--full", is_flag=True, help="Read and send every block, even with a parent.")
@click.option(
    "--dirty-bitmap",
    help="NBD sources: the QEMU dirty bitmap of the changes since the last restore point.",
)
@click.option(
    "--changed-ranges",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON map of the byte ranges changed since the last restore point.",
)
@api_option
@json_option
def backup(
    source: str,
    repository: str,
    job: str,
    disk: str | None,
    compression: str,
    wait: bool,
    full: bool,
    dirty_bitmap: str | None,
    changed_ranges: Path | None,
    api_url: str,
    as_json: bool,
) -> None:
    """Back up SOURCE: a raw image file, a block device, a qcow2 image, or an NBD URI
    (nbd://host:port/export, nbd+unix:///export?socket=PATH). A disk with a restore point
    of the same job is backed up incrementally: only changed blocks are sent, found by
    --dirty-bitmap or --changed-ranges, or else by comparing every block's digest.
    Without SOURCE, run the job named by --job (as `jobs start` does)."""
    if source is None:
        if disk or dirty_bitmap or changed_ranges:
            fail("--disk, --dirty-bitmap and --changed-ranges need a SOURCE")
        start_job(job, full, wait, api_url, as_json)
        return
    if source.startswith(("nbd://", "nbd+unix://")):
        if disk is None:
            fail("name the disk of an NBD source with --disk")
    else:
        # the path as the source movers see it: made absolute here when it is here (the
        # CLI on their host), else taken as it is (the CLI elsewhere, say through a
        # port-forward to a cluster), where only an absolute path makes sense
        path = Path(source)
        if path.exists():
            path = path.resolve()
        elif not path.is_absolute():
            fail(f"source {source} does not exist here; name a source movers' path absolute")
        source, disk = str(path), disk or path.name
    request: dict[str, Any] = {
        "source": source,
        "repository": repository,
        "job": job,
        "disk": disk,
        "compression": compression,
        "full": full,
        "dirty_bitmap": dirty_bitmap,
    }
    if changed_ranges is not None:
        try:
            request["changed_ranges"] = json.loads(changed_ranges.read_text())
        except (OSError, ValueError) as exc:
            fail(f"reading the changed-ranges map {changed_ranges}: {exc}")
    _store("/api/v1/backups", request, f"backup of {disk}", wait, api_url, as_json)


def _store(
    path: str, request: dict[str, Any], what: str, wait: bool, api_url: str, as_json: bool
) -> None:
    """Start a backup or a copy (POST ``path``); with ``wait``, follow it to its end and
    say what it stored, or fail."""
    with api_client(api_url) as client:
        session = call(client, "POST", path, json=request)
        if wait:
            session = follow(client, session, as_json)
    document = session_document(session)
    if not wait:
        emit(as_json, document, f"started {session['kind']} session {session['id']}")
        return
    if document["state"] != "success":
        if as_json:
            emit(True, document, "")
        fail(f"{what} failed: {document['error']}")
    c = document["counters"]
    for warning in document["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    kind = f"incremental of {document['parent']}" if document["parent"] else "full"
    if document["disk"] is None:
        kind = f"{len(document['tasks'])} disks"
    deduplicated = sum(
        c.get(f"blocks_deduplicated_{how}", 0) for how in ("parent", "session", "global")
    )
    tracking = f", changes by {document['tracking']}" if document["tracking"] else ""
    emit(
        as_json,
        document,
        f"restore point {document['restore_point']} ({kind}{tracking}):"
        f" read {size(c.get('bytes_read', 0))}, sent {size(c.get('bytes_sent', 0))}"
        f" ({c.get('blocks_sent', 0)} of {c.get('blocks_total', 0)} blocks;"
        f" {c.get('blocks_unchanged', 0) + c.get('blocks_skipped', 0)} unchanged,"
        f" {c.get('blocks_zero', 0)} zero, {deduplicated} deduplicated)"
        f" in {document['seconds']:.1f} s",
    )


@main.command()
@click.argument("restore_point")
@repo_option
@click.option("--to", "to", required=True, help="The repository it is copied to.")
@click.option(
    "--compression",
    type=click.Choice(["none", "fast", "optimal", "high", "extreme"]),
    default="optimal",
    show_default=True,
    help="How the blocks sent are compressed.",
)
@click.option("--full", is_flag=True, help="Read every block, even with a copy there to build on.")
@click.option("--wait", is_flag=True, help="Follow the session until it ends.")
@api_option
@json_option
def copy(
    restore_point: str,
    repository: str,
    to: str,
    compression: str,
    full: bool,
    wait: bool,
    api_url: str,
    as_json: bool,
) -> None:
    """Copy RESTORE_POINT from --repository to the repository --to, as a restore point of
    the same job there that restores on its own: only the chunks missing there are sent.
    With a restore point of the job there already, only the blocks that differ from it
    are read (a destination made with `repo init --copy-params-from` the source) or sent."""
    request = {
        "restore_point": restore_point,
        "repository": repository,
        "to": to,
        "compression": compression,
        "full": full,
    }
    _store("/api/v1/copies", request, f"copy of {restore_point} to {to}", wait, api_url, as_json)


@main.command()
@click.argument("restore_point")
@destination_option
@click.option("--force", is_flag=True, help="Replace an existing destination file.")
@click.option("--disk", help="The disk to restore, when the restore point has several.")
@click.option(
    "--allow-holes",
    is_flag=True,
    help="Restore what can be read; leave blocks whose chunk is damaged or missing as"
    " zeros and list them as warnings, instead of failing.",
)
@repo_option
@api_option
@json_option
def restore(
    restore_point: str,
    destination: Path,
    force: bool,
    disk: str | None,
    allow_holes: bool,
    repository: str,
    api_url: str,
    as_json: bool,
) -> None:
    """Restore RESTORE_POINT to a file or block device through the mesh."""
    if destination.exists() and destination.is_file() and not force:
        fail(f"{destination} exists: pass --force to replace it")
    request = {
        "restore_point": restore_point,
        "destination": str(destination.resolve()),
        "repository": repository,
        "disk": disk,
        "force": force,
        "allow_holes": allow_holes,
    }
    with api_client(api_url) as client:
        session = call(client, "POST", "/api/v1/restores", json=request)
        session = follow(client, session, as_json)
    document = session_document(session)
    if document["state"] not in ("success", "warning"):
        if as_json:
            emit(True, document, "")
        fail(f"restore of {document['disk']} failed: {document['error']}")
    if not as_json:
        for warning in document["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
    written = document["counters"].get("bytes_written", 0)
    emit(
        as_json,
        document,
        f"restored {document['disk']} of {restore_point} to {destination}:"
        f" {size(written)} in {document['seconds']:.1f} s ({rate(written, document['seconds'])})",
    )


@main.command()
@click.argument("restore_point", required=False)
@repo_option
@api_option
@json_option
def verify(restore_point: str | None, repository: str, api_url: str, as_json: bool) -> None:
    """Read and check every chunk of RESTORE_POINT (default: of every restore point)."""
    with api_client(api_url) as client:
        report = call(
            client,
            "POST",
            "/api/v1/verify",
            json={"repository": repository, "restore_point": restore_point},
        )
    emit(as_json, report, report.get("summary", json.dumps(report)))
    if not report.get("ok", False):
        sys.exit(1)


@main.command("restore-points")
@repo_option
@click.option("--job", help="Only this job's restore points.")
@api_option
@json_option
def restore_points(repository: str, job: str | None, api_url: str, as_json: bool) -> None:
    """List the committed restore points of a repository."""
    params = {"repository": repository} | ({"job": job} if job else {})
    with api_client(api_url) as client:
        points = call(client, "GET", "/api/v1/restore-points", params=params)
    if as_json:
        click.echo(json.dumps({"restore_points": points}))
        return
    table = Table("restore point", "job", "created", "disks")
    table.columns[0].no_wrap = True
    for rp in points:
        table.add_row(
            rp["id"],
            rp["job"],
            rp["created"],
            ", ".join(f"{d['name']} ({size(d['size'])})" for d in rp["disks"]),
        )
    show_table(table)
