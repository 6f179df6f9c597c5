"""``blockferry export`` and ``blockferry files``: a restore point's disk served over NBD
and its files listed, streamed and restored, by the repository's owner through the
orchestrator (``repo export`` and ``repo files`` do the same straight from a repository).
"""

from __future__ import annotations

import signal
import stat
import sys
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
import httpx
from rich.table import Table

from blockferry.cli import main
from blockferry.cli.client import api_client, api_option, call, json_option, repo_option
from blockferry.cli.output import console, emit, fail, show_table

KINDS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK, "other": 0}
disk_option = click.option("--disk", help="The disk, when the restore point has several.")
PATHS_HELP = (
    "PATH starts with the volume: /p1/etc/hosts is /etc/hosts on partition 1, /disk/... a"
    " file system on the whole disk; `ls /` lists the volumes."
)


@main.command()
@click.argument("restore_point")
@disk_option
@click.option(
    "--socket", help="A Unix socket on the owner's host, under a restore root (default: its own)."
)
@click.option(
    "--listen", metavar="HOST:PORT", help="Serve on TCP instead (TLS, client certificates)."
)
@repo_option
@api_option
@json_option
def export(
    restore_point: str,
    disk: str | None,
    socket: str | None,
    listen: str | None,
    repository: str,
    api_url: str,
    as_json: bool,
) -> None:
    """Serve a disk of RESTORE_POINT read-only over NBD, from the host of the role that
    holds the repository, until stopped (Ctrl-C): boot a VM from it through a qcow2
    overlay, copy it with qemu-img or nbdcopy. The URI is printed first."""
    if socket is not None and listen is not None:
        fail("give --socket or --listen, not both")
    body = {"repository": repository, "restore_point": restore_point, "disk": disk}
    body |= {"socket": socket, "listen": listen}
    with api_client(api_url) as client:
        info = call(client, "POST", "/api/v1/exports", json=body)
        path, params = f"/api/v1/exports/{info['id']}", {"repository": repository}
        emit(as_json, info, info["uri"])
        sys.stdout.flush()
        console.print(
            f"serving disk {info['disk']} of {info['restore_point']} read-only at {info['uri']}"
            f" until stopped; boot from it with: qemu-img create -f qcow2 -b '{info['uri']}'"
            " -F raw overlay.qcow2"
        )
        stopped = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopped.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        while not stopped.wait(info["lease_s"] / 3):
            response = _request(client, "POST", f"{path}/keepalive", params)
            if response is not None and response.status_code >= 400:
                fail(f"the export stopped: {response.json().get('detail', response.text)}")
        _request(client, "DELETE", path, params)


def _request(
    client: httpx.Client, method: str, path: str, params: dict[str, str]
) -> httpx.Response | None:
    """One call that may fail for a while (an orchestrator restarting): None then."""
    try:
        return client.request(method, path, params=params)
    except httpx.HTTPError as exc:
        console.print(f"reaching the orchestrator: {exc}; trying again")
        return None


@main.group()
def files() -> None:
    """Browse and restore the files of a backed-up disk, through the repository's owner.

    PATH starts with the volume: /p1/etc/hosts is /etc/hosts on partition 1, /disk/... a
    file system on the whole disk; `ls /` lists the volumes.
    """


@files.command("ls")
@click.argument("restore_point")
@click.argument("path", default="/")
@disk_option
@repo_option
@api_option
@json_option
def files_ls(
    restore_point: str, path: str, disk: str | None, repository: str, api_url: str, as_json: bool
) -> None:
    """List the directory PATH (names, sizes, modes, owners, times)."""
    params = {"repository": repository, "path": path} | ({"disk": disk} if disk else {})
    with api_client(api_url) as client:
        listing = call(
            client, "GET", f"/api/v1/restore-points/{restore_point}/files", params=params
        )
    show_listing(path, listing["entries"], as_json)


@files.command("cat")
@click.argument("restore_point")
@click.argument("path")
@disk_option
@repo_option
@api_option
def files_cat(
    restore_point: str, path: str, disk: str | None, repository: str, api_url: str
) -> None:
    """Write the file PATH to standard output."""
    params = {"repository": repository, "path": path} | ({"disk": disk} if disk else {})
    out = sys.stdout.buffer
    url = f"/api/v1/restore-points/{restore_point}/files/content"
    with api_client(api_url) as client, client.stream("GET", url, params=params) as response:
        if response.status_code >= 400:
            response.read()
            fail(f"GET {url}: {response.json().get('detail', response.text)}")
        try:
            for data in response.iter_bytes():
                out.write(data)
        except httpx.HTTPError as exc:
            fail(f"reading {path}: {exc}")
    out.flush()


@files.command("restore")
@click.argument("restore_point")
@click.argument("path")
@click.option(
    "--to",
    "destination",
    required=True,
    help="A directory on the owner's host, under a restore root: PATH is restored in it.",
)
@click.option("--overwrite", is_flag=True, help="Replace entries that exist.")
@disk_option
@repo_option
@api_option
@json_option
def files_restore(
    restore_point: str,
    path: str,
    destination: str,
    overwrite: bool,
    disk: str | None,
    repository: str,
    api_url: str,
    as_json: bool,
) -> None:
    """Restore the file or tree PATH on the host of the repository's owner, keeping modes,
    owners (as root), times, symlinks and holes. A file that cannot be read is reported
    and the rest restored; the exit status is then 1."""
    body: dict[str, Any] = {"repository": repository, "restore_point": restore_point}
    body |= {"disk": disk, "path": path, "destination": destination, "overwrite": overwrite}
    with api_client(api_url) as client:
        result = call(client, "POST", "/api/v1/file-restores", json=body)
    show_files_restored(result, f"{path} of {restore_point} into {destination}", as_json)


@files.command("find")
@click.argument("pattern")
@click.option("--job", help="Only this job's restore points.")
@repo_option
@api_option
@json_option
def files_find(pattern: str, job: str | None, repository: str, api_url: str, as_json: bool) -> None:
    """Which restore points hold a file: PATTERN (shell wildcards, quoted) matches a
    file's name, or its whole path when it has a /. Searches the file catalogs (jobs with
    `catalog: true`), without opening a disk."""
    params = {"repository": repository, "pattern": pattern} | ({"job": job} if job else {})
    with api_client(api_url) as client:
        result = call(client, "GET", "/api/v1/files/find", params=params)
    show_found(result, as_json)


@files.command("catalog")
@click.argument("restore_point")
@repo_option
@api_option
@json_option
def files_catalog(restore_point: str, repository: str, api_url: str, as_json: bool) -> None:
    """Build the file catalog of RESTORE_POINT (a job with `catalog: true` does it after
    each backup)."""
    with api_client(api_url) as client:
        built = call(
            client,
            "POST",
            f"/api/v1/restore-points/{restore_point}/catalog",
            params={"repository": repository},
        )
    emit(as_json, built, f"catalogued {restore_point}: {built['entries']} entries")


def show_found(result: dict[str, Any], as_json: bool) -> None:
    """The versions found, oldest restore point first (or one JSON object)."""
    if as_json:
        emit(True, result, "")
        return
    table = Table("restore point", "job", "disk", "size", "modified", "path", box=None)
    for one in result["found"]:
        modified = datetime.fromtimestamp(one["mtime_ns"] / 1e9, UTC)
        table.add_row(
            one["restore_point"],
            one["job"],
            one["disk"],
            str(one["size"]),
            modified.strftime("%Y-%m-%d %H:%M:%S"),
            one["path"],
        )
    show_table(table)
    if result["uncatalogued"]:
        console.print(
            f"{len(result['uncatalogued'])} restore points have no catalog and were not"
            " searched (blockferry files catalog RESTORE_POINT builds one)"
        )


def show_listing(path: str, entries: list[dict[str, Any]], as_json: bool) -> None:
    """A directory's entries as ``ls -l`` shows them (or one JSON object)."""
    if as_json:
        emit(True, {"path": path, "entries": entries}, "")
        return
    table = Table("mode", "owner", "size", "modified", "name", box=None)
    for entry in entries:
        modified = datetime.fromtimestamp(entry["mtime_ns"] / 1e9, UTC)
        name = entry["name"] + ("/" if entry["kind"] == "dir" else "")
        if entry.get("target") is not None:
            name += f" -> {entry['target']}"
        if entry.get("filesystem") is not None:
            name += f"  ({entry['filesystem']})"
        table.add_row(
            stat.filemode(KINDS[entry["kind"]] | int(entry["mode"], 8)),
            f"{entry['uid']}:{entry['gid']}",
            str(entry["size"]),
            modified.strftime("%Y-%m-%d %H:%M:%S"),
            name,
        )
    show_table(table)


def show_files_restored(result: dict[str, Any], what: str, as_json: bool) -> None:
    """What a file restore did; the exit status is 1 when a file failed."""
    for failed, why in sorted(result["failed"].items()):
        console.print(f"[bold red]not restored:[/] {failed}: {why}")
    for skipped, why in sorted(result["skipped"].items()):
        console.print(f"skipped {skipped}: {why}")
    emit(
        as_json,
        result,
        f"restored {what}: {result['files']} files, {result['dirs']} directories,"
        f" {result['symlinks']} symlinks, {result['bytes']} bytes",
    )
    if result["failed"]:
        sys.exit(1)
