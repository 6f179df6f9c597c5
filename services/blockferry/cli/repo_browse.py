"""``blockferry repo export`` and ``blockferry repo files``: a restore point's disk served
over NBD, and its files listed, read and restored, straight from a repository (no Kafka).

Both read the disk in place (:class:`~blockferry.repository.disk_reader.DiskReader`) and
pin the restore point meanwhile, so prune keeps it and GC, which still runs, keeps its
chunks. With ``--read-only`` nothing is written to the repository, not even the pin.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from blockferry.cli.in_place import show_files_restored, show_found, show_listing
from blockferry.cli.output import console, emit, fail
from blockferry.cli.repo import READ_ONLY_HELP, Unlock, open_unlocked, repo, unlock_options
from blockferry.core.errors import BlockferryError

if TYPE_CHECKING:
    from blockferry.files.disk_files import DiskFiles

disk_option = click.option("--disk", help="The disk, when the restore point has several.")


@repo.command("export")
@click.argument("location", metavar="REPOSITORY")
@click.argument("restore_point")
@disk_option
@click.option(
    "--socket",
    type=click.Path(path_type=Path),
    help="The Unix socket to serve on (default: one in the temporary directory).",
)
@click.option("--listen", metavar="HOST:PORT", help="Serve on a TCP address instead, TLS only.")
@click.option(
    "--tls-certificates",
    type=click.Path(path_type=Path, file_okay=False),
    help="With --listen: a directory holding ca-cert.pem, server-cert.pem and server-key.pem;"
    " clients must present a certificate the CA signed.",
)
@unlock_options
def repo_export(
    location: str,
    restore_point: str,
    disk: str | None,
    socket: Path | None,
    listen: str | None,
    tls_certificates: Path | None,
    unlock: Unlock,
) -> None:
    """Serve a disk of RESTORE_POINT read-only over NBD until stopped (Ctrl-C, SIGTERM),
    straight from the repository at REPOSITORY: boot a VM from it through a qcow2 overlay,
    copy it with qemu-img or nbdcopy, or mount it with qemu-nbd."""
    from blockferry.export.nbdkit import Export, ExportRequest

    if socket is not None and listen is not None:
        fail("give --socket or --listen, not both")
    try:
        opened, secret = open_unlocked(location, unlock)
        with opened:
            name = opened.restore_point(restore_point).choose_disk(disk)
        request = ExportRequest(
            repository=location,
            restore_point=restore_point,
            disk=name,
            socket=None if listen else socket or _default_socket(restore_point, name),
            listen=_address(listen) if listen else None,
            tls_certificates=tls_certificates,
            secret=secret,
        )
        export = Export.start(request)
    except BlockferryError as exc:
        fail(str(exc))
    click.echo(request.uri(), nl=True)
    sys.stdout.flush()
    console.print(
        f"serving disk {name} of {restore_point} read-only at {request.uri()} until stopped;"
        f" boot from it with: qemu-img create -f qcow2 -b '{request.uri()}' -F raw overlay.qcow2"
    )
    with _stopped_by_signals(export.terminate):
        status = export.wait()
    export.stop()
    if status not in (0, -signal.SIGTERM):
        fail(f"the export stopped with status {status}: {export.stderr().strip()}")


@repo.group("files")
def repo_files() -> None:
    """Browse and restore the files of a backed-up disk, straight from a repository.

    PATH starts with the volume: /p1/etc/hosts is /etc/hosts on partition 1, /disk/...
    a file system on the whole disk; `ls /` lists the volumes.
    """


def files_command(name: str) -> Callable[[Callable[..., None]], click.Command]:
    """The arguments every ``repo files`` command takes."""

    def decorate(function: Callable[..., None]) -> click.Command:
        function = unlock_options(function)
        function = click.option("--read-only", is_flag=True, help=READ_ONLY_HELP)(function)
        function = disk_option(function)
        function = click.argument("restore_point")(function)
        function = click.argument("location", metavar="REPOSITORY")(function)
        return repo_files.command(name)(function)

    return decorate


@files_command("ls")
@click.argument("path", default="/")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def files_ls(
    location: str,
    restore_point: str,
    disk: str | None,
    read_only: bool,
    unlock: Unlock,
    path: str,
    as_json: bool,
) -> None:
    """List the directory PATH (names, sizes, modes, owners, times)."""
    try:
        with _disk_files(location, restore_point, disk, read_only, unlock) as files:
            entries = files.list(path)
    except BlockferryError as exc:
        fail(str(exc))
    show_listing(path, [entry.to_dict() for entry in entries], as_json)


@files_command("cat")
@click.argument("path")
def files_cat(
    location: str, restore_point: str, disk: str | None, read_only: bool, unlock: Unlock, path: str
) -> None:
    """Write the file PATH to standard output."""
    out = sys.stdout.buffer
    try:
        with (
            _disk_files(location, restore_point, disk, read_only, unlock) as files,
            files.open(path) as source,
        ):
            while data := source.read(1024 * 1024):
                out.write(data)
    except BlockferryError as exc:
        fail(str(exc))
    out.flush()


@files_command("restore")
@click.argument("path")
@click.option(
    "--to",
    "destination",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default="the current directory",
    help="The directory to restore into (PATH is restored as DIR/its name).",
)
@click.option("--overwrite", is_flag=True, help="Replace entries that exist.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def files_restore(
    location: str,
    restore_point: str,
    disk: str | None,
    read_only: bool,
    unlock: Unlock,
    path: str,
    destination: Path,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Restore the file or tree PATH, keeping modes, owners (as root), times, symlinks and
    holes. A file that cannot be read (a damaged chunk) is reported and the rest restored;
    the exit status is then 1."""
    from blockferry.files.restore import restore_files

    try:
        with _disk_files(location, restore_point, disk, read_only, unlock) as files:
            result = restore_files(files, path, destination, overwrite=overwrite)
    except BlockferryError as exc:
        fail(str(exc))
    show_files_restored(result.to_dict(), f"{path} of {restore_point} into {destination}", as_json)


@repo_files.command("find")
@click.argument("location", metavar="REPOSITORY")
@click.argument("pattern")
@click.option("--job", help="Only this job's restore points.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def files_find(location: str, pattern: str, job: str | None, as_json: bool, unlock: Unlock) -> None:
    """Which restore points hold a file, from their catalogs: PATTERN (shell wildcards)
    matches a file's name, or its whole path when it has a /."""
    from blockferry.files.catalog import find

    try:
        repository, _ = open_unlocked(location, unlock, read_only=True)
        with repository:
            found, missing = find(repository, pattern, job)
    except BlockferryError as exc:
        fail(str(exc))
    show_found({"found": [asdict(one) for one in found], "uncatalogued": missing}, as_json)


@repo_files.command("catalog")
@click.argument("location", metavar="REPOSITORY")
@click.argument("restore_point")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def files_catalog(location: str, restore_point: str, as_json: bool, unlock: Unlock) -> None:
    """Build the file catalog of RESTORE_POINT."""
    from blockferry.files.catalog import build_catalog

    try:
        repository, _ = open_unlocked(location, unlock)
        with repository:
            entries = build_catalog(repository, restore_point)
    except BlockferryError as exc:
        fail(str(exc))
    built = {"restore_point": restore_point, "entries": entries}
    emit(as_json, built, f"catalogued {restore_point}: {entries} entries")


@contextlib.contextmanager
def _disk_files(
    location: str, rp_id: str, disk: str | None, read_only: bool, unlock: Unlock
) -> Iterator[DiskFiles]:
    """The file systems of a disk of ``rp_id``, pinned (unless ``read_only``)."""
    from blockferry.files.disk_files import opened_disk

    repository, _ = open_unlocked(location, unlock, read_only=read_only)
    with repository, opened_disk(repository, rp_id, disk, pin=not read_only) as files:
        yield files


def _default_socket(rp_id: str, disk: str) -> Path:
    return Path(tempfile.gettempdir()) / f"blockferry-{rp_id[-12:]}-{disk}.sock"


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--listen takes HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _stopped_by_signals(stop: object) -> Iterator[None]:
    """Run ``stop()`` on SIGINT or SIGTERM while the block runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()  # type: ignore[operator]

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
