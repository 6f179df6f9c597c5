"""A repository named by its location, and the backend that serves it.

========================================================  ==============================
location                                                  backend
========================================================  ==============================
``/srv/repo``, ``repo``, ``file:///srv/repo``             a directory: a local disk, or
                                                          a mounted share (NFS, SMB)
``s3://bucket/prefix?endpoint=URL&region=R&profile=P``    S3-compatible object storage
========================================================  ==============================

Credentials never appear in a location: an S3 store's come from the environment or a
shared credentials file (a mounted secret), the ``profile`` choosing one of its profiles
(:mod:`s3_storage`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from blockferry.core.errors import ConfigError
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.s3_storage import S3Location, S3Storage
from blockferry.repository.storage import Storage

LOCAL = "file"
S3 = "s3"
SCHEMES = (LOCAL, S3)


def scheme(location: str) -> str:
    """The kind of storage ``location`` names: :data:`LOCAL` or :data:`S3`.

    Raises:
        ConfigError: an unknown scheme.
    """
    if "://" not in location:
        return LOCAL
    found = location.split("://", 1)[0].lower()
    if found not in SCHEMES:
        raise ConfigError(
            f"repository location {location!r}: unknown scheme {found!r}; use a path,"
            " file:///path or s3://bucket/prefix?endpoint=URL"
        )
    return found


def local_path(location: str) -> Path:
    """The directory a local location names."""
    if "://" not in location:
        return Path(location)
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"repository location {location!r}: a file URL names a local path"
            " (file:///path); mount a remote share and name its mount point"
        )
    return Path(unquote(parts.path))


def s3_location(location: str) -> S3Location:
    """The bucket, prefix, endpoint, region and profile an ``s3://`` location names."""
    parts = urlsplit(location)
    if not parts.netloc:
        raise ConfigError(f"repository location {location!r}: no bucket (s3://bucket/prefix)")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - {"endpoint", "region", "profile"})
    if unknown:
        raise ConfigError(
            f"repository location {location!r}: unknown parameter {', '.join(unknown)}"
            " (endpoint, region, profile)"
        )
    prefix = unquote(parts.path).strip("/")
    return S3Location(
        bucket=parts.netloc,
        prefix=f"{prefix}/" if prefix else "",
        endpoint=query.get("endpoint"),
        region=query.get("region"),
        profile=query.get("profile"),
    )


def open_storage(location: str, *, check_writes: bool = False) -> Storage:
    """The backend of the repository at ``location``; with ``check_writes``, proven to
    keep the put-if-absent the repository's locks and commits need (an S3 store must
    enforce conditional writes), else nothing is read yet.

    Raises:
        ConfigError: a malformed location.
        RepositoryError: the store cannot be used (with ``check_writes``).
    """
    kind = scheme(location)
    if kind == S3:
        storage = S3Storage(s3_location(location))
        if check_writes:
            storage.check_conditional_writes()
        return storage
    return LocalStorage(local_path(location))
