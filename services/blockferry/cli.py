"""The one entry point: ``blockferry run ROLE…|all``, ``repo …``, ``backup``, ``restore``,
``verify``, ``restore-points``. Commands other than ``run`` and ``repo`` talk to the
orchestrator's REST API; ``repo`` works on a repository path directly, with no Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from blockferry import api_token
from blockferry.core.blocks import BLOCK_SIZES, DEFAULT_BLOCK_SIZE
from blockferry.core.errors import BlockferryError

console = Console(stderr=True)
DEFAULT_API = "http://127.0.0.1:8080"


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    sys.exit(1)


def emit(as_json: bool, document: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=None, sort_keys=True))
    else:
        click.echo(text)


@click.group()
@click.option(
    "--log-level",
    default=lambda: os.environ.get("BLOCKFERRY_LOG_LEVEL", "INFO"),
    show_default="INFO",
    help="Logging level.",
)
def main(log_level: str) -> None:
    """blockferry: block-level backup of virtual machines and volumes over Kafka."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
@click.argument("roles", nargs=-1, required=True)
def run(roles: tuple[str, ...]) -> None:
    """Run ROLES (orchestrator, source-mover, dedupe-index, target-mover) or all in this
    process."""
    from blockferry.roles import resolve
    from blockferry.runner import run_roles

    try:
        names = resolve(roles)
    except ValueError as exc:
        fail(str(exc))
    try:
        asyncio.run(run_roles(names))
    except BlockferryError as exc:
        fail(str(exc))


@main.command()
@click.argument("roles", nargs=-1)
@click.option("--print-defaults", is_flag=True, help="The defaults, ignoring env and files.")
def config(roles: tuple[str, ...], print_defaults: bool) -> None:
    """Print the settings of ROLES (default: all) as YAML: the effective ones, from the
    environment and BLOCKFERRY_CONFIG_FILE, or with --print-defaults the defaults."""
    import yaml

    from blockferry.roles import ROLES, resolve

    try:
        names = resolve(roles or ("all",))
    except ValueError as exc:
        fail(str(exc))
    merged: dict[str, Any] = {}
    for name in names:
        model = ROLES[name].settings
        settings = model.model_construct() if print_defaults else model()
        merged.update(settings.model_dump(mode="json", exclude={"instance"}))
    click.echo(yaml.safe_dump(merged, sort_keys=True), nl=False)


destination_option = click.option(
    "--to",
    "destination",
    required=True,
    type=click.Path(path_type=Path),
    help="Destination file or block device.",
)


# -- repo: a repository path, no Kafka ------------------------------------------------


@main.group()
def repo() -> None:
    """Work on a repository path directly (creation, checks, disaster recovery)."""


@repo.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--block-size",
    type=click.Choice([str(s // 1024) for s in BLOCK_SIZES]),
    default=str(DEFAULT_BLOCK_SIZE // 1024),
    show_default=True,
    help="Block size in KiB, fixed for the repository's life.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Shard count: partitions of the chunk topic.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_init(path: Path, block_size: str, shards: int, as_json: bool) -> None:
    """Create a repository at PATH."""
    from blockferry.repository import Repository

    try:
        created = Repository.init(path, block_size=int(block_size) * 1024, shard_count=shards)
    except BlockferryError as exc:
        fail(str(exc))
    config = created.config
    emit(
        as_json,
        {
            "path": str(path),
            "id": config.id,
            "block_size": config.block_size,
            "shard_count": config.shard_count,
        },
        f"created repository {config.id} at {path} (block size {config.block_size // 1024} KiB,"
        f" {config.shard_count} shards)",
    )


@repo.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--read-data", is_flag=True, help="Also read and verify every chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_check(path: Path, read_data: bool, as_json: bool) -> None:
    """Check a repository's consistency."""
    from blockferry.repository import Repository, check, verify

    try:
        opened = Repository.open(path)
        report = verify(opened) if read_data else check(opened)
    except BlockferryError as exc:
        fail(str(exc))
    document = report.to_dict()
    emit(as_json, document, report.summary())
    if not report.ok:
        sys.exit(1)


@repo.command("rebuild-index")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_rebuild_index(path: Path, as_json: bool) -> None:
    """Rebuild the pack index from the packs alone."""
    from blockferry.repository import Repository

    try:
        packs = Repository.open(path).rebuild_index()
    except BlockferryError as exc:
        fail(str(exc))
    emit(as_json, {"packs": packs}, f"rebuilt the index from {packs} packs")


@repo.command("restore")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("restore_point")
@destination_option
@click.option("--disk", help="The disk to restore, when the restore point has several.")
@click.option("--force", is_flag=True, help="Replace an existing destination file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_restore(
    path: Path, restore_point: str, destination: Path, disk: str | None, force: bool, as_json: bool
) -> None:
    """Restore a disk straight from the repository at PATH, with no Kafka."""
    from blockferry.repository import Repository, restore_disk

    started = time.monotonic()
    try:
        opened = Repository.open(path)
        rp = opened.restore_point(restore_point)
        disks = [d.name for d in rp.disks]
        name = disk or (disks[0] if len(disks) == 1 else None)
        if name is None:
            fail(f"name one disk with --disk: {', '.join(disks)}")
        size = next(d.size for d in rp.disks if d.name == name)
        with _progress(as_json, f"restoring {name}", size) as advance:
            result = restore_disk(
                opened, restore_point, name, destination, force=force, progress=advance
            )
    except BlockferryError as exc:
        fail(str(exc))
    seconds = time.monotonic() - started
    emit(
        as_json,
        {
            "restore_point": restore_point,
            "disk": name,
            "destination": str(destination),
            "bytes_written": result.bytes_written,
            "seconds": round(seconds, 3),
        },
        f"restored {name} of {restore_point} to {destination}: {result.bytes_written} bytes"
        f" in {seconds:.1f} s",
    )


class _progress:
    """A progress bar on stderr (none with --json); the callable takes bytes done."""

    def __init__(self, quiet: bool, what: str, total: int) -> None:
        self._bar = (
            None
            if quiet
            else Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=console,
                transient=True,
            )
        )
        self._what = what
        self._total = total

    def __enter__(self) -> Any:
        if self._bar is None:
            return lambda done: None
        self._bar.start()
        task = self._bar.add_task(self._what, total=self._total)
        bar = self._bar
        return lambda done: bar.update(task, advance=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- commands through the orchestrator's API ------------------------------------------


def _api(api_url: str) -> httpx.Client:
    """A client of the orchestrator, with the API token of ``BLOCKFERRY_API_TOKEN_FILE``
    (default: ``api-token`` in the data directory) when there is one."""
    from blockferry.settings import CommonSettings

    configured = os.environ.get("BLOCKFERRY_API_TOKEN_FILE")
    path = Path(configured) if configured else api_token.default_path(CommonSettings().data_dir)
    try:
        token = api_token.read(path)
    except BlockferryError as exc:
        fail(str(exc))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api_url, headers=headers, timeout=httpx.Timeout(30.0, read=3600.0))


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(
            f"reaching the orchestrator at {client.base_url}: {exc}"
            " (is the mesh running? try `make up`)"
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        fail(f"{method} {path}: {detail}")
    return response.json()


api_option = click.option(
    "--api",
    "api_url",
    envvar="BLOCKFERRY_API_URL",
    default=DEFAULT_API,
    show_default=True,
    help="The orchestrator's URL.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
repo_option = click.option(
    "--repo",
    "repository",
    default="default",
    show_default=True,
    help="The repository's name in the mesh.",
)


def _follow(client: httpx.Client, session: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Poll a session until it ends, with a progress bar on stderr."""
    bar = (
        None
        if as_json
        else Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} blocks"),
            console=console,
            transient=True,
        )
    )
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task(f"{session['kind']} {session['disk']}", total=None)
    try:
        while session["state"] not in ("success", "failed"):
            session = _call(
                client, "GET", f"/api/v1/sessions/{session['id']}", params={"wait_s": 1.0}
            )
            if bar is not None and task is not None and session["blocks_total"]:
                bar.update(task, total=session["blocks_total"], completed=session["blocks_done"])
    finally:
        if bar is not None:
            bar.stop()
    return session


def _session_document(session: dict[str, Any]) -> dict[str, Any]:
    counters = session.get("counters", {})
    return {
        "session": session["id"],
        "state": session["state"],
        "restore_point": session.get("restore_point"),
        "job": session["job"],
        "disk": session["disk"],
        "bytes_read": counters.get("bytes_read", 0),
        "bytes_sent": counters.get("bytes_sent", 0),
        "bytes_written": counters.get("bytes_written", 0),
        "seconds": round(session.get("seconds", 0.0), 3),
        "parent": session.get("parent"),
        "tracking": session.get("tracking", ""),
        "warnings": session.get("warnings", []),
        "error": session.get("error", ""),
        "counters": counters,
    }


@main.command()
@click.argument("source")
@repo_option
@click.option("--job", default="default", show_default=True, help="The job the disk belongs to.")
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
    """Back up SOURCE: a raw image file, a block device, or an NBD URI
    (nbd://host:port/export, nbd+unix:///export?socket=PATH). A disk with a restore point
    of the same job is backed up incrementally: only changed blocks are sent, found by
    --dirty-bitmap or --changed-ranges, or else by comparing every block's digest."""
    if source.startswith(("nbd://", "nbd+unix://")):
        if disk is None:
            fail("name the disk of an NBD source with --disk")
    else:
        path = Path(source)
        if not path.exists():
            fail(f"source {source} does not exist")
        source, disk = str(path.resolve()), disk or path.name
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
    with _api(api_url) as client:
        session = _call(client, "POST", "/api/v1/backups", json=request)
        if wait:
            session = _follow(client, session, as_json)
    document = _session_document(session)
    if not wait:
        emit(as_json, document, f"started backup session {session['id']}")
        return
    if session["state"] != "success":
        if as_json:
            emit(True, document, "")
        fail(f"backup of {session['disk']} failed: {session['error']}")
    c = session["counters"]
    for warning in session["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    kind = f"incremental of {session['parent']}" if session["parent"] else "full"
    deduplicated = sum(
        c.get(f"blocks_deduplicated_{how}", 0) for how in ("parent", "session", "global")
    )
    emit(
        as_json,
        document,
        f"restore point {session['restore_point']} ({kind}, changes by {session['tracking']}):"
        f" read {c.get('bytes_read', 0)} bytes, sent {c.get('bytes_sent', 0)}"
        f" ({c.get('blocks_sent', 0)} of {c.get('blocks_total', 0)} blocks;"
        f" {c.get('blocks_unchanged', 0) + c.get('blocks_skipped', 0)} unchanged,"
        f" {c.get('blocks_zero', 0)} zero, {deduplicated} deduplicated)"
        f" in {session['seconds']:.1f} s",
    )


@main.command()
@click.argument("restore_point")
@destination_option
@click.option("--force", is_flag=True, help="Replace an existing destination file.")
@click.option("--disk", help="The disk to restore, when the restore point has several.")
@repo_option
@api_option
@json_option
def restore(
    restore_point: str,
    destination: Path,
    force: bool,
    disk: str | None,
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
    }
    with _api(api_url) as client:
        session = _call(client, "POST", "/api/v1/restores", json=request)
        session = _follow(client, session, as_json)
    document = _session_document(session)
    if session["state"] != "success":
        if as_json:
            emit(True, document, "")
        fail(f"restore of {session['disk']} failed: {session['error']}")
    emit(
        as_json,
        document,
        f"restored {session['disk']} of {restore_point} to {destination}:"
        f" {session['counters'].get('bytes_written', 0)} bytes in {session['seconds']:.1f} s",
    )


@main.command()
@click.argument("restore_point", required=False)
@repo_option
@api_option
@json_option
def verify(restore_point: str | None, repository: str, api_url: str, as_json: bool) -> None:
    """Read and check every chunk of RESTORE_POINT (default: of every restore point)."""
    with _api(api_url) as client:
        report = _call(
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
    with _api(api_url) as client:
        points = _call(client, "GET", "/api/v1/restore-points", params=params)
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
            ", ".join(f"{d['name']} ({d['size']} B)" for d in rp["disks"]),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
