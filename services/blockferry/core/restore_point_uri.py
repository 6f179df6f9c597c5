"""The source of a copy: ``restore-point://REPOSITORY/RESTORE_POINT/DISK``, a disk of a
restore point in another repository, which a source mover reads as it reads a disk."""

from __future__ import annotations

from blockferry.core.errors import SourceError

SCHEME = "restore-point://"


def is_restore_point_uri(source: str) -> bool:
    return source.startswith(SCHEME)


def restore_point_uri(repository: str, restore_point: str, disk: str) -> str:
    return f"{SCHEME}{repository}/{restore_point}/{disk}"


def parse_restore_point_uri(source: str) -> tuple[str, str, str]:
    """(repository, restore point, disk) of a ``restore-point://`` source.

    Raises:
        SourceError: it is not one.
    """
    parts = source.removeprefix(SCHEME).split("/")
    if not is_restore_point_uri(source) or len(parts) != 3 or not all(parts):
        raise SourceError(f"{source!r} is not restore-point://REPOSITORY/RESTORE_POINT/DISK")
    return parts[0], parts[1], parts[2]
