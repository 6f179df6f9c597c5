"""Restore points read in place by the repository's owner, for the API: the files of a
disk listed, read and restored (under the owner's restore roots), file catalogs built
and searched, and disks served over NBD by nbdkit on the owner's host.

Each command opens what it reads (:func:`~blockferry.files.disk_files.opened_disk`, the
restore point pinned meanwhile); an export keeps its pin as long as nbdkit runs. An export
lives for :data:`EXPORT_LEASE_S` unless its client keeps it alive (the CLI does, every
third of it), so one whose client died does not serve, and pin, forever.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from blockferry.command_server import Handler
from blockferry.core.errors import ConfigError
from blockferry.export.nbdkit import Export, ExportRequest
from blockferry.files.catalog import build_catalog, find
from blockferry.files.disk_files import opened_disk
from blockferry.files.restore import restore_files
from blockferry.ingest.context import IngestContext
from blockferry.repository.keys import Secret
from blockferry.restore_target import check_named_within, check_within_roots
from blockferry.transport import commands as cmd

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPORT_LEASE_S = 120
"""An export stops when no keep-alive came for this long."""
EXPIRY_CHECK_S = 5.0
THREADS = 4
"""Threads for the in-place commands of one repository."""
READ_LIMIT = 8 * 1024 * 1024
"""The most one read-file command returns (a record on the bus stays small)."""


@dataclass(frozen=True)
class InPlaceAccess:
    """What the owner needs beyond its repository to serve it in place."""

    location: str
    """The repository's location, for nbdkit's plugin to open it as the owner does."""
    secret: Secret | None
    restore_roots: list[Path]
    """Where restored files may be written and export sockets made."""
    exports_dir: Path
    """Where an export's socket goes when the caller names none."""
    tls_dir: Path | None
    """The owner's certificates for exports on TCP (ca-cert.pem, server-cert.pem,
    server-key.pem); None: exports on TCP are refused."""


@dataclass
class _Lease:
    export: Export
    info: cmd.ExportInfo
    deadline: float


class InPlace:
    """The owner's handlers of the in-place commands, and its running exports."""

    def __init__(self, ctx: IngestContext, access: InPlaceAccess) -> None:
        self._ctx = ctx
        self._access = access
        self._exports: dict[str, _Lease] = {}
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=f"in-place-{ctx.name}")

    async def _in_pool(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in threads of their own: a file restore or an export's start
        never holds the threads of backups."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def handlers(self) -> list[Handler[Any, Any]]:
        return [
            Handler(cmd.LIST_FILES, self._list_files),
            Handler(cmd.READ_FILE, self._read_file),
            Handler(cmd.RESTORE_FILES, self._restore_files),
            Handler(cmd.START_EXPORT, self._start_export),
            Handler(cmd.KEEP_EXPORT, self._keep_export),
            Handler(cmd.STOP_EXPORT, self._stop_export),
            Handler(cmd.BUILD_CATALOG, self._build_catalog),
            Handler(cmd.FIND_FILES, self._find_files),
        ]

    async def run(self) -> None:
        """End the exports whose lease ran out, until cancelled (then end them all)."""
        try:
            while True:
                await asyncio.sleep(EXPIRY_CHECK_S)
                now = time.monotonic()
                for export_id, lease in list(self._exports.items()):
                    if lease.deadline < now:
                        log.warning("export %s was not kept alive: stopping it", export_id)
                        await self._end(export_id)
        finally:
            for export_id in list(self._exports):
                await asyncio.shield(self._end(export_id))
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _list_files(self, args: cmd.FilesArguments, _: str) -> cmd.FileList:
        def listing() -> cmd.FileList:
            with opened_disk(self._ctx.repo, args.restore_point, args.disk) as files:
                entries = files.list(args.path)
            return cmd.FileList(entries=[cmd.FileEntry(**e.to_dict()) for e in entries])

        return await self._in_pool(listing)

    async def _read_file(self, args: cmd.ReadFileArguments, _: str) -> cmd.FileData:
        def read() -> cmd.FileData:
            with opened_disk(self._ctx.repo, args.restore_point, args.disk) as files:
                size = files.stat(args.path).size
                with files.open(args.path) as source:
                    source.seek(args.offset)
                    data = source.read(min(args.length, READ_LIMIT))
            return cmd.FileData(data=data, size=size)

        return await self._in_pool(read)

    async def _restore_files(self, args: cmd.RestoreFilesArguments, _: str) -> cmd.FilesRestored:
        check_named_within(args.destination, self._access.restore_roots)
        destination = Path(args.destination)
        check_within_roots(destination, self._access.restore_roots)

        def restore() -> cmd.FilesRestored:
            with opened_disk(self._ctx.repo, args.restore_point, args.disk) as files:
                result = restore_files(files, args.path, destination, overwrite=args.overwrite)
            return cmd.FilesRestored.model_validate(result.to_dict())

        return await self._in_pool(restore)

    async def _build_catalog(self, args: cmd.CatalogArguments, _: str) -> cmd.CatalogBuilt:
        entries = await self._in_pool(build_catalog, self._ctx.repo, args.restore_point)
        return cmd.CatalogBuilt(restore_point=args.restore_point, entries=entries)

    async def _find_files(self, args: cmd.FindArguments, _: str) -> cmd.FoundFiles:
        found, missing = await self._in_pool(find, self._ctx.repo, args.pattern, args.job)
        return cmd.FoundFiles(
            found=[cmd.FoundFile(**asdict(one)) for one in found], uncatalogued=missing
        )

    async def _start_export(self, args: cmd.StartExportArguments, _: str) -> cmd.ExportInfo:
        if args.listen and self._access.tls_dir is None:
            raise ConfigError(
                f"repository {self._ctx.name}'s owner serves exports on TCP only with TLS:"
                " set its export_tls_dir, or export on a Unix socket"
            )
        export_id = secrets.token_hex(6)
        point = await self._in_pool(self._ctx.repo.restore_point, args.restore_point)
        disk = point.choose_disk(args.disk)
        request = ExportRequest(
            repository=self._access.location,
            restore_point=point.id,
            disk=disk,
            socket=None if args.listen else self._socket(args.socket, export_id),
            listen=_address(args.listen) if args.listen else None,
            tls_certificates=self._access.tls_dir,
            secret=self._access.secret,
        )
        export = await self._in_pool(Export.start, request)
        info = cmd.ExportInfo(
            id=export_id,
            restore_point=point.id,
            disk=disk,
            uri=request.uri(),
            lease_s=EXPORT_LEASE_S,
        )
        self._exports[export_id] = _Lease(export, info, time.monotonic() + EXPORT_LEASE_S)
        log.info("export %s: disk %s of %s at %s", export_id, disk, point.id, info.uri)
        return info

    async def _keep_export(self, args: cmd.ExportArguments, _: str) -> cmd.Done:
        lease = self._lease(args.id)
        if lease.export.process.poll() is not None:
            await self._end(args.id)
            raise ConfigError(f"export {args.id} has stopped: {lease.export.stderr().strip()}")
        lease.deadline = time.monotonic() + EXPORT_LEASE_S
        return cmd.Done()

    async def _stop_export(self, args: cmd.ExportArguments, _: str) -> cmd.Done:
        self._lease(args.id)
        await self._end(args.id)
        return cmd.Done()

    def _lease(self, export_id: str) -> _Lease:
        lease = self._exports.get(export_id)
        if lease is None:
            raise ConfigError(f"no export {export_id} on repository {self._ctx.name} (it ended)")
        return lease

    async def _end(self, export_id: str) -> None:
        lease = self._exports.pop(export_id, None)
        if lease is None:
            return
        try:
            await self._in_pool(lease.export.stop)
        except Exception:  # an export that cannot be stopped must not stop the repository
            log.exception("stopping export %s", export_id)
        else:
            log.info("export %s ended", export_id)

    def _socket(self, named: str | None, export_id: str) -> Path:
        if named is None:
            self._access.exports_dir.mkdir(parents=True, exist_ok=True)
            return self._access.exports_dir / f"{export_id}.sock"
        check_named_within(named, self._access.restore_roots)
        socket = Path(named)
        check_within_roots(socket, self._access.restore_roots)
        return socket


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"an export listens on HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)
