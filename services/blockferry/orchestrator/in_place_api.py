"""The API of restore points read in place, answered by each repository's owner: the
files of a disk listed, streamed and restored, and disks served over NBD (exports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from blockferry.orchestrator.auth import OPERATOR
from blockferry.orchestrator.models import NAME
from blockferry.transport import commands as cmd

READ_BYTES = 4 * 1024 * 1024
"""The bytes of a file asked for by one command while streaming it."""

ExportId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]
Command = Callable[..., Awaitable[Any]]
"""The orchestrator's ``_command(repository, spec, arguments, timeout=None)``."""


class FileRestoreRequest(BaseModel):
    restore_point: str
    path: str = Field(description="The file or directory, its volume first: /p1/etc.")
    destination: str = Field(
        description="An existing directory under a restore root of the repository's owner;"
        " the path is restored in it under its own name."
    )
    repository: str = Field("default", pattern=NAME)
    disk: str | None = Field(None, pattern=NAME, description="Needed when it has several disks.")
    overwrite: bool = Field(False, description="Replace entries that exist.")


class ExportRequest(BaseModel):
    restore_point: str
    repository: str = Field("default", pattern=NAME)
    disk: str | None = Field(None, pattern=NAME, description="Needed when it has several disks.")
    socket: str | None = Field(
        None, description="A Unix socket under a restore root of the owner (default: one it picks)."
    )
    listen: str | None = Field(
        None, description="HOST:PORT on the owner's host instead: TLS with client certificates."
    )


def in_place_routes(
    api: APIRouter, command: Command, known: Callable[[str], Awaitable[Any]], timeout: float
) -> None:
    """Add the routes to ``api``; ``known(repository)`` refuses an unknown repository,
    ``timeout`` bounds a file restore."""

    @api.get("/restore-points/{restore_point}/files", dependencies=OPERATOR)
    async def list_files(
        restore_point: str, path: str = "/", repository: str = "default", disk: str | None = None
    ) -> cmd.FileList:
        """The entries of a directory (``/``: the disk's volumes)."""
        await known(repository)
        args = cmd.FilesArguments(restore_point=restore_point, disk=disk, path=path)
        result: cmd.FileList = await command(repository, cmd.LIST_FILES, args)
        return result

    @api.get(
        "/restore-points/{restore_point}/files/content",
        dependencies=OPERATOR,
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    async def file_content(
        restore_point: str, path: str, repository: str = "default", disk: str | None = None
    ) -> StreamingResponse:
        """A regular file's bytes, streamed."""
        await known(repository)

        async def read(offset: int) -> cmd.FileData:
            args = cmd.ReadFileArguments(
                restore_point=restore_point, disk=disk, path=path, offset=offset, length=READ_BYTES
            )
            data: cmd.FileData = await command(repository, cmd.READ_FILE, args)
            return data

        first = await read(0)  # errors answer before the body starts

        async def body() -> AsyncIterator[bytes]:
            piece, offset = first, 0
            while True:
                yield piece.data
                offset += len(piece.data)
                if not piece.data or offset >= piece.size:
                    return
                piece = await read(offset)

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(first.size)},
        )

    @api.post("/file-restores", dependencies=OPERATOR)
    async def restore_files(request: FileRestoreRequest) -> cmd.FilesRestored:
        """Restore a file or tree on the repository owner's host, under a restore root;
        files that cannot be read are listed in ``failed`` and the rest restored."""
        await known(request.repository)
        args = cmd.RestoreFilesArguments(**request.model_dump(exclude={"repository"}))
        result: cmd.FilesRestored = await command(
            request.repository, cmd.RESTORE_FILES, args, timeout
        )
        return result

    @api.post("/restore-points/{restore_point}/catalog", dependencies=OPERATOR)
    async def build_catalog(restore_point: str, repository: str = "default") -> cmd.CatalogBuilt:
        """List every file of the restore point's disks into its catalog (jobs with
        ``catalog`` do it after each backup)."""
        await known(repository)
        args = cmd.CatalogArguments(restore_point=restore_point)
        result: cmd.CatalogBuilt = await command(repository, cmd.BUILD_CATALOG, args, timeout)
        return result

    @api.get("/files/find", dependencies=OPERATOR)
    async def find_files(
        pattern: str, repository: str = "default", job: str | None = None
    ) -> cmd.FoundFiles:
        """Which restore points hold a file: ``pattern`` (shell wildcards) matches its
        name, or its whole path when it has a ``/``; from the catalogs only."""
        await known(repository)
        args = cmd.FindArguments(pattern=pattern, job=job)
        result: cmd.FoundFiles = await command(repository, cmd.FIND_FILES, args, timeout)
        return result

    @api.post("/exports", status_code=201, dependencies=OPERATOR)
    async def start_export(request: ExportRequest) -> cmd.ExportInfo:
        """Serve a disk read-only over NBD from the repository owner's host. It stops
        unless kept alive (``POST /exports/{id}/keepalive``) within its ``lease_s``."""
        await known(request.repository)
        args = cmd.StartExportArguments(**request.model_dump(exclude={"repository"}))
        result: cmd.ExportInfo = await command(request.repository, cmd.START_EXPORT, args)
        return result

    @api.post("/exports/{export_id}/keepalive", status_code=204, dependencies=OPERATOR)
    async def keep_export(export_id: ExportId, repository: str = "default") -> Response:
        await known(repository)
        await command(repository, cmd.KEEP_EXPORT, cmd.ExportArguments(id=export_id))
        return Response(status_code=204)

    @api.delete("/exports/{export_id}", status_code=204, dependencies=OPERATOR)
    async def stop_export(export_id: ExportId, repository: str = "default") -> Response:
        await known(repository)
        await command(repository, cmd.STOP_EXPORT, cmd.ExportArguments(id=export_id))
        return Response(status_code=204)
