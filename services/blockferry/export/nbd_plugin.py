"""The nbdkit plugin that serves one disk of a restore point, read-only.

nbdkit (the NBD server) loads this file into its own Python interpreter; it never runs
in a blockferry process. :mod:`blockferry.export.nbdkit` starts nbdkit with the
parameters ``repository=LOCATION restore_point=ID disk=NAME`` and, for an encrypted
repository, ``secret_fd=N``: a pipe it inherited that carries the unlocking secret as
one JSON object (so the secret is on no command line and in no environment).

Zero blocks are reported as holes that read as zeros (``base:allocation``), which lets
``qemu-img convert`` and ``nbdcopy`` skip them. The restore point is pinned while nbdkit
runs, so prune keeps it and GC keeps its chunks; GC still runs.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import nbdkit  # provided by nbdkit at run time

from blockferry.repository.disk_reader import DiskReader
from blockferry.repository.keys import Secret
from blockferry.repository.locations import open_storage
from blockferry.repository.locks import HeldLock
from blockferry.repository.repository import Repository

API_VERSION = 2

_parameters: dict[str, str] = {}
_served: dict[str, Any] = {}


def config(key: str, value: str) -> None:
    if key not in ("repository", "restore_point", "disk", "secret_fd"):
        raise ValueError(f"unknown parameter {key}")
    _parameters[key] = value


def config_complete() -> None:
    missing = {"repository", "restore_point", "disk"} - _parameters.keys()
    if missing:
        raise ValueError(f"missing parameters: {', '.join(sorted(missing))}")


def get_ready() -> None:
    secret = None
    if "secret_fd" in _parameters:
        with os.fdopen(int(_parameters["secret_fd"]), "rb") as pipe:
            document = json.loads(pipe.read())
        secret = Secret(document["kind"], base64.b64decode(document["material"]))
    repo = Repository.open(open_storage(_parameters["repository"]), secret=secret)
    rp_id = _parameters["restore_point"]
    pin: HeldLock = repo.pin(rp_id, f"NBD export of disk {_parameters['disk']}")
    point = repo.restore_point(rp_id)
    _served.update(repo=repo, pin=pin, reader=DiskReader(repo, point, _parameters["disk"]))


def cleanup() -> None:
    if "reader" in _served:
        _served["reader"].close()
        _served["pin"].release()
        _served["repo"].close()


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def open(readonly: bool) -> int:  # the name nbdkit calls
    return 1


def get_size(handle: int) -> int:
    return int(_served["reader"].size)


def can_write(handle: int) -> bool:
    return False


def can_multi_conn(handle: int) -> bool:
    return True


def can_extents(handle: int) -> bool:
    return True


def is_rotational(handle: int) -> bool:
    return False


def pread(handle: int, buf: bytearray, offset: int, flags: int) -> None:
    data = _served["reader"].read(offset, len(buf))
    if len(data) != len(buf):
        raise OSError(f"read past the end of the disk at offset {offset}")
    buf[:] = data


def extents(handle: int, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    hole = int(nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO)
    return [
        (extent.offset, extent.length, hole if extent.zero else 0)
        for extent in _served["reader"].extents(offset, count)
    ]
