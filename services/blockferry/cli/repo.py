"""``repo``: work on a repository path directly, with no Kafka."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from blockferry.cli import main
from blockferry.cli.client import destination_option
from blockferry.cli.output import console, emit, fail
from blockferry.core.blocks import BLOCK_SIZES, DEFAULT_BLOCK_SIZE
from blockferry.core.errors import BlockferryError

if TYPE_CHECKING:
    from blockferry.repository import Repository

REPO_LOCK_WAIT_S = 60.0
"""How long ``repo`` commands wait for a backup's or a GC's lock."""


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


READ_ONLY_HELP = (
    "Write nothing to the repository: take no lock (so a GC elsewhere is not held off) "
    "and quarantine no damaged chunk."
)


def _open(path: Path, read_only: bool) -> Repository:
    from blockferry.repository import Repository
    from blockferry.repository.local_storage import LocalStorage
    from blockferry.repository.storage_views import ReadOnlyStorage

    return Repository.open(ReadOnlyStorage(LocalStorage(path)) if read_only else path)


@repo.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--read-data", is_flag=True, help="Also read and verify every chunk.")
@click.option("--read-only", is_flag=True, help=READ_ONLY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_check(path: Path, read_data: bool, read_only: bool, as_json: bool) -> None:
    """Check a repository's consistency."""
    from blockferry.repository import check, verify

    try:
        opened = _open(path, read_only)
        lock = not read_only
        report = verify(opened, lock=lock) if read_data else check(opened, lock=lock)
    except BlockferryError as exc:
        fail(str(exc))
    document = report.to_dict()
    emit(as_json, document, report.summary())
    if not report.ok:
        sys.exit(1)


@repo.command("export-dedupe-key")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("file", type=click.Path(path_type=Path))
def repo_export_dedupe_key(path: Path, file: Path) -> None:
    """Write the dedupe key of the repository at PATH to FILE (mode 0600): the secret a
    source mover needs, as <its dedupe_keys_dir>/<repository name>.key, to back up to
    the repository and restore from it. The key never travels over Kafka."""
    from blockferry.core.blocks import key_fingerprint
    from blockferry.repository import Repository
    from blockferry.source_mover.dedupe_keys import write_key_file

    try:
        key = Repository.open(path).config.dedupe_key
        write_key_file(file, key)
    except BlockferryError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"writing {file}: {exc.strerror}")
    click.echo(f"wrote the dedupe key (fingerprint {key_fingerprint(key)}) to {file}", err=True)


@repo.command("rebuild-index")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_rebuild_index(path: Path, as_json: bool) -> None:
    """Rebuild the pack index from the packs alone."""
    from blockferry.repository import Repository

    try:
        packs = Repository.open(path).rebuild_index(lock_wait=REPO_LOCK_WAIT_S)
    except BlockferryError as exc:
        fail(str(exc))
    emit(as_json, {"packs": packs}, f"rebuilt the index from {packs} packs")


@repo.command("set-aside")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_set_aside(path: Path, ident: str, as_json: bool) -> None:
    """Set a damaged restore point (or a session's staged fixed indexes) aside.

    ID is a restore point id or a session id. It moves to PATH/damaged/, where it is
    no restore point any more: not listed, restored or pruned, so garbage collection
    and prune run again. Its files are kept, and so are the chunks its fixed indexes
    name: repair it and move it back, or delete it from damaged/ to let them go.
    """
    from blockferry.repository import Repository
    from blockferry.repository.damaged import set_aside

    try:
        target = set_aside(Repository.open(path), ident, lock_wait=REPO_LOCK_WAIT_S)
    except BlockferryError as exc:
        fail(str(exc))
    emit(
        as_json,
        {"id": ident, "moved_to": str(target)},
        f"set {ident} aside to {target}; `blockferry gc` can run again",
    )


@repo.command("restore")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("restore_point")
@destination_option
@click.option("--disk", help="The disk to restore, when the restore point has several.")
@click.option("--force", is_flag=True, help="Replace an existing destination file.")
@click.option("--read-only", is_flag=True, help=READ_ONLY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_restore(
    path: Path,
    restore_point: str,
    destination: Path,
    disk: str | None,
    force: bool,
    read_only: bool,
    as_json: bool,
) -> None:
    """Restore a disk straight from the repository at PATH, with no Kafka."""
    from blockferry.repository import restore_disk

    started = time.monotonic()
    try:
        opened = _open(path, read_only)
        rp = opened.restore_point(restore_point)
        disks = [d.name for d in rp.disks]
        name = disk or (disks[0] if len(disks) == 1 else None)
        if name is None:
            fail(f"name one disk with --disk: {', '.join(disks)}")
        size = next(d.size for d in rp.disks if d.name == name)
        with _progress(as_json, f"restoring {name}", size) as advance:
            result = restore_disk(
                opened,
                restore_point,
                name,
                destination,
                force=force,
                progress=advance,
                lock=not read_only,
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
