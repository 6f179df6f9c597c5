"""``repo``: work on a repository directly (a path or a URL: ``locations``), with no
Kafka."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from blockferry.cli import main
from blockferry.cli.client import destination_option
from blockferry.cli.maintenance import retention_of, retention_options, show_gc, show_prune
from blockferry.cli.output import console, emit, fail
from blockferry.core.blocks import BLOCK_SIZES, DEFAULT_BLOCK_SIZE
from blockferry.core.errors import BlockferryError

if TYPE_CHECKING:
    from blockferry.repository import Repository
    from blockferry.repository.keys import Secret
    from blockferry.repository.storage import Storage

REPO_LOCK_WAIT_S = 60.0
"""How long ``repo`` commands wait for a backup's or a GC's lock."""


@main.group()
def repo() -> None:
    """Work on a repository directly (creation, checks, disaster recovery): REPOSITORY is
    a path, file:///path or s3://bucket/prefix?endpoint=URL."""


def unlock_options(function: Callable[..., None]) -> Callable[..., None]:
    """Add the options that unlock an encrypted repository; the command gets ``unlock``
    (read only when the repository turns out to be encrypted; with none given, a
    passphrase is asked for on a terminal)."""

    @click.option(
        "--key-file",
        type=click.Path(path_type=Path),
        envvar="BLOCKFERRY_REPO_KEY_FILE",
        help="A key file of the repository (env BLOCKFERRY_REPO_KEY_FILE).",
    )
    @click.option(
        "--passphrase-file",
        type=click.Path(path_type=Path),
        envvar="BLOCKFERRY_REPO_PASSPHRASE_FILE",
        help="A file whose first line is a passphrase of the repository"
        " (env BLOCKFERRY_REPO_PASSPHRASE_FILE).",
    )
    @click.option(
        "--recovery-key-file",
        type=click.Path(path_type=Path),
        help="A file holding the repository's recovery key (blockferry repo key recovery).",
    )
    @functools.wraps(function)
    def wrapper(
        *args: Any,
        key_file: Path | None,
        passphrase_file: Path | None,
        recovery_key_file: Path | None,
        **kwargs: Any,
    ) -> None:
        given = [option for option in (key_file, passphrase_file, recovery_key_file) if option]
        if len(given) > 1:
            fail("give one of --key-file, --passphrase-file and --recovery-key-file")
        kwargs["unlock"] = Unlock(key_file, passphrase_file, recovery_key_file)
        function(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Unlock:
    """The unlock option given (at most one): read when the repository is encrypted, so
    a command on a directory with no repository says so, whatever key it was given."""

    key_file: Path | None
    passphrase_file: Path | None
    recovery_key_file: Path | None

    def secret(self) -> Secret | None:
        from blockferry.repository.keys import Secret

        if self.key_file is not None:
            return Secret.key_file(self.key_file)
        if self.passphrase_file is not None:
            return Secret.passphrase(_first_line(self.passphrase_file))
        if self.recovery_key_file is not None:
            return Secret.recovery_key(_first_line(self.recovery_key_file))
        return None


def _first_line(path: Path) -> str:
    from blockferry.core.errors import ConfigError

    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"reading {path}: {exc}") from exc
    return lines[0] if lines else ""


def _open(location: str, unlock: Unlock, *, read_only: bool = False) -> Repository:
    """The repository at ``location``; an encrypted one unlocked with the secret ``unlock``
    names, or with a passphrase asked for on a terminal when it names none."""
    return open_unlocked(location, unlock, read_only=read_only)[0]


def open_unlocked(
    location: str, unlock: Unlock, *, read_only: bool = False
) -> tuple[Repository, Secret | None]:
    """:func:`_open`, and the secret that unlocked the repository (None: not encrypted)."""
    from blockferry.core.errors import WrongKey
    from blockferry.repository import Repository
    from blockferry.repository.keys import Secret
    from blockferry.repository.locations import open_storage
    from blockferry.repository.storage_views import ReadOnlyStorage

    def storage() -> Storage:
        base = open_storage(location)
        return ReadOnlyStorage(base) if read_only else base

    try:
        return Repository.open(storage()), None
    except WrongKey:
        secret = unlock.secret()
        if secret is None and not sys.stdin.isatty():
            raise
    if secret is None:
        secret = Secret.passphrase(
            click.prompt(f"passphrase of {location}", hide_input=True, err=True)
        )
    return Repository.open(storage(), secret=secret), secret


@repo.command("init")
@click.argument("location", metavar="REPOSITORY")
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
@click.option(
    "--key-file",
    type=click.Path(path_type=Path),
    help="Encrypt with a key file: FILE is created (mode 0600) unless it exists."
    " Keep a copy away from the repository: without a key nothing can be restored.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path),
    help="Encrypt with the passphrase on the first line of FILE (with --key-file: both open it).",
)
@click.option(
    "--insecure-no-encryption",
    is_flag=True,
    help="Store everything in the clear: anyone who reads the repository reads the disks.",
)
@click.option(
    "--copy-params-from",
    "params_from",
    metavar="SOURCE",
    default=None,
    help="A repository whose block size and dedupe key this one takes, so that restore"
    " points copied from it keep their digests: only the chunks missing here are sent"
    " and nothing is digested again. Its unlock options: --from-key-file,"
    " --from-passphrase-file.",
)
@click.option("--from-key-file", type=click.Path(path_type=Path), help="A key file of SOURCE.")
@click.option(
    "--from-passphrase-file",
    type=click.Path(path_type=Path),
    help="A file whose first line is a passphrase of SOURCE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_init(
    location: str,
    block_size: str,
    shards: int,
    key_file: Path | None,
    passphrase_file: Path | None,
    insecure_no_encryption: bool,
    params_from: str | None,
    from_key_file: Path | None,
    from_passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create a repository at REPOSITORY, encrypted at rest unless told otherwise."""
    from blockferry.core.errors import ConfigError
    from blockferry.repository import Repository
    from blockferry.repository.keys import Secret, write_key_file
    from blockferry.repository.locations import open_storage

    try:
        dedupe_key = None
        if params_from is not None:
            if from_key_file and from_passphrase_file:
                raise ConfigError("give one of --from-key-file and --from-passphrase-file")
            source = _open(
                params_from, Unlock(from_key_file, from_passphrase_file, None), read_only=True
            )
            given = click.get_current_context().get_parameter_source("block_size")
            if given is click.core.ParameterSource.COMMANDLINE and (
                int(block_size) * 1024 != source.config.block_size
            ):
                raise ConfigError(
                    f"--block-size {block_size}: {params_from} has blocks of"
                    f" {source.config.block_size // 1024} KiB, which a copy keeps"
                )
            block_size = str(source.config.block_size // 1024)
            dedupe_key = source.config.dedupe_key
        elif from_key_file or from_passphrase_file:
            raise ConfigError(
                "--from-key-file and --from-passphrase-file go with --copy-params-from"
            )
        secrets: list[Secret] = []
        if insecure_no_encryption:
            if key_file or passphrase_file:
                raise ConfigError("--insecure-no-encryption takes no key file or passphrase")
        else:
            if key_file is not None:
                if not key_file.exists():
                    key_file.parent.mkdir(parents=True, exist_ok=True)
                    write_key_file(key_file)
                secrets.append(Secret.key_file(key_file))
            if passphrase_file is not None:
                secrets.append(Secret.passphrase(_first_line(passphrase_file)))
            if not secrets:
                if not sys.stdin.isatty():
                    raise ConfigError(
                        "choose how the repository is encrypted: --key-file FILE (created if"
                        " missing), --passphrase-file FILE, or --insecure-no-encryption"
                    )
                passphrase = click.prompt(
                    f"passphrase for {location}",
                    hide_input=True,
                    confirmation_prompt=True,
                    err=True,
                )
                secrets.append(Secret.passphrase(passphrase))
        created = Repository.init(
            open_storage(location, check_writes=True),
            block_size=int(block_size) * 1024,
            shard_count=shards,
            secret=secrets[0] if secrets else None,
            dedupe_key=dedupe_key,
        )
        for more in secrets[1:]:
            created.add_key(more, label="initial")
    except BlockferryError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"creating {key_file}: {exc.strerror}")
    config = created.config
    emit(
        as_json,
        {
            "path": location,
            "id": config.id,
            "block_size": config.block_size,
            "shard_count": config.shard_count,
            "encryption": config.encryption_mode,
        },
        f"created repository {config.id} at {location} (block size {config.block_size // 1024} KiB,"
        f" {config.shard_count} shards, encryption {config.encryption_mode})",
    )
    if key_file is not None and not as_json:
        click.echo(
            f"keep a copy of {key_file} away from the repository (or print `blockferry repo key"
            " recovery`): without it nothing in the repository can be restored",
            err=True,
        )


READ_ONLY_HELP = (
    "Write nothing to the repository: take no lock (so a GC elsewhere is not held off) "
    "and quarantine no damaged chunk."
)


@repo.command("check")
@click.argument("location", metavar="REPOSITORY")
@click.option("--read-data", is_flag=True, help="Also read and verify every chunk.")
@click.option("--read-only", is_flag=True, help=READ_ONLY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_check(
    location: str, read_data: bool, read_only: bool, as_json: bool, unlock: Unlock
) -> None:
    """Check a repository's consistency."""
    from blockferry.repository import check, verify

    try:
        opened = _open(location, unlock, read_only=read_only)
        lock = not read_only
        report = verify(opened, lock=lock) if read_data else check(opened, lock=lock)
    except BlockferryError as exc:
        fail(str(exc))
    document = report.to_dict()
    emit(as_json, document, report.summary())
    if not report.ok:
        sys.exit(1)


@repo.command("export-dedupe-key")
@click.argument("location", metavar="REPOSITORY")
@click.argument("file", type=click.Path(path_type=Path))
@unlock_options
def repo_export_dedupe_key(location: str, file: Path, unlock: Unlock) -> None:
    """Write the dedupe key of the repository at REPOSITORY to FILE (mode 0600): the secret a
    source mover needs, as <its dedupe_keys_dir>/<repository name>.key, to back up to
    the repository and restore from it. The key never travels over Kafka."""
    from blockferry.core.blocks import key_fingerprint
    from blockferry.source_mover.dedupe_keys import write_key_file

    try:
        key = _open(location, unlock).config.dedupe_key
        write_key_file(file, key)
    except BlockferryError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"writing {file}: {exc.strerror}")
    click.echo(f"wrote the dedupe key (fingerprint {key_fingerprint(key)}) to {file}", err=True)


@repo.command("rebuild-index")
@click.argument("location", metavar="REPOSITORY")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_rebuild_index(location: str, as_json: bool, unlock: Unlock) -> None:
    """Rebuild the pack index from the packs alone."""
    try:
        packs = _open(location, unlock).rebuild_index(lock_wait=REPO_LOCK_WAIT_S)
    except BlockferryError as exc:
        fail(str(exc))
    emit(as_json, {"packs": packs}, f"rebuilt the index from {packs} packs")


@repo.command("prune")
@click.argument("location", metavar="REPOSITORY")
@click.option("--job", required=True, help="The job whose restore points are pruned.")
@retention_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_prune(
    location: str,
    job: str,
    timezone: str,
    dry_run: bool,
    as_json: bool,
    unlock: Unlock,
    **rules: int | None,
) -> None:
    """Remove the restore points of JOB that the policy given does not keep, directly
    (an append-only repository's owner cannot: run this with credentials that may
    delete). The newest restore point of each disk always stays."""
    from blockferry.repository.retention import Policy

    retention = retention_of(rules, timezone)
    if retention is None:
        fail("give the policy: --keep-last, --daily, --weekly, --monthly or --yearly")
    try:
        result = _open(location, unlock).prune(job, Policy(**retention), dry_run=dry_run)
    except BlockferryError as exc:
        fail(str(exc))
    show_prune({"kept": result.kept, "removed": result.removed}, dry_run, as_json)


@repo.command("gc")
@click.argument("location", metavar="REPOSITORY")
@click.option(
    "--grace",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Keep whole the packs of this many generations before this GC's (each backup's"
    " start and each GC begins one): at least as many as GCs may run during a backup.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_gc(location: str, grace: int, dry_run: bool, as_json: bool, unlock: Unlock) -> None:
    """Delete the chunks no restore point references, directly, under the exclusive lock
    (an append-only repository's owner cannot: run this with credentials that may
    delete). Its owner learns of the removed chunks when it next starts; until then a
    backup that counted on one sends it again."""
    from blockferry.ingest.config import IngestConfig
    from blockferry.repository.gc import collect_garbage

    try:
        result = collect_garbage(
            _open(location, unlock),
            pack_size=IngestConfig().pack_size,
            grace=grace,
            dry_run=dry_run,
        )
    except BlockferryError as exc:
        fail(str(exc))
    show_gc(result.summary(), dry_run, as_json)


@repo.command("s3-policy")
@click.argument("location", metavar="REPOSITORY")
@click.option(
    "--for",
    "kind",
    type=click.Choice(["backup", "maintenance"]),
    required=True,
    help="backup: the gateway's credentials (no deletion of data); maintenance: those of"
    " repo prune and repo gc.",
)
def repo_s3_policy(location: str, kind: str) -> None:
    """Print the IAM policy of an immutable repository's credentials on S3 (see the
    README, "Immutable repositories")."""
    from blockferry.repository.locations import S3, s3_location, scheme
    from blockferry.repository.s3_policies import policy_json

    try:
        if scheme(location) != S3:
            fail(f"{location} is not an s3:// location")
        click.echo(policy_json(s3_location(location), kind))
    except BlockferryError as exc:
        fail(str(exc))


@repo.command("upgrade")
@click.argument("location", metavar="REPOSITORY")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repo_upgrade(location: str, as_json: bool) -> None:
    """Convert the repository at REPOSITORY from format version 1 to version 2, in place.

    One atomic write of config.json under the exclusive lock: interrupted, run it
    again. The repository stays unencrypted: version 1 has no encryption, and its
    chunks are not rewritten.
    """
    from blockferry.core.errors import WrongKey
    from blockferry.repository import Repository
    from blockferry.repository.config import CONFIG_VERSION
    from blockferry.repository.locations import open_storage

    try:
        upgraded = Repository.open(open_storage(location)).upgrade(lock_wait=REPO_LOCK_WAIT_S)
    except WrongKey:
        upgraded = False  # encrypted: only version 2 is
    except BlockferryError as exc:
        fail(str(exc))
    emit(
        as_json,
        {"upgraded": upgraded, "version": CONFIG_VERSION},
        f"upgraded {location} to format version {CONFIG_VERSION}"
        if upgraded
        else f"{location} is format version {CONFIG_VERSION} already: nothing to do",
    )


@repo.command("set-aside")
@click.argument("location", metavar="REPOSITORY")
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_set_aside(location: str, ident: str, as_json: bool, unlock: Unlock) -> None:
    """Set a damaged restore point (or a session's staged fixed indexes) aside.

    ID is a restore point id or a session id. It moves to damaged/ in the repository, where it is
    no restore point any more: not listed, restored or pruned, so garbage collection
    and prune run again. Its files are kept, and so are the chunks its fixed indexes
    name: repair it and move it back, or delete it from damaged/ to let them go.
    """
    from blockferry.repository.damaged import set_aside

    try:
        opened = _open(location, unlock)
        target = opened.storage.where(set_aside(opened, ident, lock_wait=REPO_LOCK_WAIT_S))
    except BlockferryError as exc:
        fail(str(exc))
    emit(
        as_json,
        {"id": ident, "moved_to": str(target)},
        f"set {ident} aside to {target}; `blockferry gc` can run again",
    )


@repo.command("restore")
@click.argument("location", metavar="REPOSITORY")
@click.argument("restore_point")
@destination_option
@click.option("--disk", help="The disk to restore, when the restore point has several.")
@click.option("--force", is_flag=True, help="Replace an existing destination file.")
@click.option("--read-only", is_flag=True, help=READ_ONLY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_restore(
    location: str,
    restore_point: str,
    destination: Path,
    disk: str | None,
    force: bool,
    read_only: bool,
    as_json: bool,
    unlock: Unlock,
) -> None:
    """Restore a disk straight from the repository at REPOSITORY, with no Kafka."""
    from blockferry.repository import restore_disk

    started = time.monotonic()
    try:
        opened = _open(location, unlock, read_only=read_only)
        rp = opened.restore_point(restore_point)
        name = rp.choose_disk(disk)
        size = rp.disk(name).size
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


@repo.group("key")
def repo_key() -> None:
    """The keys of an encrypted repository: each opens it; change them without sealing
    anything again."""


@repo_key.command("list")
@click.argument("location", metavar="REPOSITORY")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@unlock_options
def repo_key_list(location: str, as_json: bool, unlock: Unlock) -> None:
    """List the key slots of the repository at REPOSITORY."""
    try:
        slots = _open(location, unlock).keyring.slots()
    except BlockferryError as exc:
        fail(str(exc))
    rows = [
        {"id": slot.id, "kind": slot.kind, "label": slot.label, "created": str(slot.created)}
        for slot in slots
    ]
    lines = [f"{row['id']}  {row['kind']:<10}  {row['created']}  {row['label']}" for row in rows]
    emit(as_json, {"keys": rows}, "\n".join(lines) or "no keys: the repository is not encrypted")


@repo_key.command("add")
@click.argument("location", metavar="REPOSITORY")
@click.option(
    "--new-key-file",
    type=click.Path(path_type=Path),
    help="A key file to open the repository with too; created (mode 0600) unless it exists.",
)
@click.option(
    "--new-passphrase-file",
    type=click.Path(path_type=Path),
    help="A file whose first line is a passphrase to open the repository with too.",
)
@click.option("--label", default="", help="What the key is for, for people.")
@unlock_options
def repo_key_add(
    location: str,
    new_key_file: Path | None,
    new_passphrase_file: Path | None,
    label: str,
    unlock: Unlock,
) -> None:
    """Let one more key file or passphrase open the repository at REPOSITORY."""
    from blockferry.core.errors import ConfigError
    from blockferry.repository.keys import Secret, write_key_file

    try:
        if (new_key_file is None) == (new_passphrase_file is None):
            raise ConfigError("give one of --new-key-file and --new-passphrase-file")
        repository = _open(location, unlock)
        if new_key_file is not None:
            if not new_key_file.exists():
                write_key_file(new_key_file)
            added = Secret.key_file(new_key_file)
        else:
            assert new_passphrase_file is not None
            added = Secret.passphrase(_first_line(new_passphrase_file))
        slot = repository.add_key(added, label=label)
    except BlockferryError as exc:
        fail(str(exc))
    click.echo(f"added {slot.kind} key {slot.id}")


@repo_key.command("remove")
@click.argument("location", metavar="REPOSITORY")
@click.argument("key_id", metavar="ID")
@unlock_options
def repo_key_remove(location: str, key_id: str, unlock: Unlock) -> None:
    """Remove key ID from the repository at REPOSITORY (never the last one)."""
    try:
        _open(location, unlock).keyring.remove(key_id)
    except BlockferryError as exc:
        fail(str(exc))
    click.echo(f"removed key {key_id}")


@repo_key.command("recovery")
@click.argument("location", metavar="REPOSITORY")
@unlock_options
def repo_key_recovery(location: str, unlock: Unlock) -> None:
    """Print the repository's master key as a recovery key, to keep on paper: with it
    (--recovery-key-file) the repository opens when every key file and passphrase is
    lost. Whoever holds it reads every backup in the repository."""
    try:
        text = _open(location, unlock).recovery_key()
    except BlockferryError as exc:
        fail(str(exc))
    click.echo(text)
