"""Where a soak run's repository lives: a directory served by the target mover, or a
bucket of a MinIO server or a folder of a Samba share served by the gateway. Each
server starts when a run first needs it and stops when the soak ends."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from tests.minio import MinioServer, running_minio
from tests.samba import SambaServer, running_samba

BACKENDS = ("local", "s3", "smb")


@dataclass(frozen=True)
class Place:
    """A run's repository: its backend, the role that serves it, and its location
    (``None``: the run's own directory)."""

    backend: str
    owner: str
    location: str | None

    @property
    def remote(self) -> bool:
        return self.location is not None


class Stores:
    """The servers behind the runs' repositories, for as long as ``stack`` is open."""

    def __init__(self, scratch: Path, stack: contextlib.ExitStack[bool | None]) -> None:
        self._scratch = scratch.absolute()  # smbd serves its share by an absolute path
        self._stack = stack
        self._minio: MinioServer | None = None
        self._samba: SambaServer | None = None

    def place(self, backend: str, workdir: Path) -> Place:
        """A new repository on ``backend`` for the run working in ``workdir``."""
        if backend == "local":
            return Place(backend, "target-mover", None)
        if backend == "s3":
            minio = self._started_minio()
            location = f"s3://{minio.new_bucket()}/repo?endpoint={minio.endpoint}"
            return Place(backend, "gateway", location)
        if backend == "smb":
            samba = self._started_samba()
            password_file = workdir / "smb-password"
            password_file.write_text(samba.password)
            password_file.chmod(0o600)
            location = (
                f"smb://{samba.user}@{samba.host}:{samba.port}/{samba.share}/{workdir.name}"
                f"?password_file={password_file}"
            )
            return Place(backend, "gateway", location)
        raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")

    def _started_minio(self) -> MinioServer:
        if self._minio is None:
            directory = self._scratch / "minio"
            directory.mkdir()
            self._minio = self._stack.enter_context(running_minio(directory))
            # the soak and the mesh it starts reach the bucket as an operator's would
            os.environ.update(self._minio.env())
            print(f"soak: MinIO at {self._minio.endpoint}", flush=True)
        return self._minio

    def _started_samba(self) -> SambaServer:
        if self._samba is None:
            directory = self._scratch / "samba"
            directory.mkdir()
            self._samba = self._stack.enter_context(running_samba(directory))
            print(f"soak: Samba at {self._samba.host}:{self._samba.port}", flush=True)
        return self._samba
