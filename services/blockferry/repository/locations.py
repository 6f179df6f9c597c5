"""A repository named by its location, and the backend that serves it.

========================================================  ==============================
location                                                  backend
========================================================  ==============================
``/srv/repo``, ``repo``, ``file:///srv/repo``             a directory: a local disk, or
                                                          a mounted share (NFS, SMB)
``s3://bucket/prefix?endpoint=URL&region=R&profile=P``    S3-compatible object storage
``smb://user@host:port/share/path?password_file=FILE``    an SMB 2/3 share, no mount
========================================================  ==============================

Credentials never appear in a location: an S3 store's come from the environment or a
shared credentials file (a mounted secret), the ``profile`` choosing one of its profiles
(:mod:`s3_storage`); an SMB user's password from the file ``password_file`` names (a
mounted secret, its owner's only).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from blockferry.core.errors import ConfigError
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.s3_storage import S3Location, S3Storage
from blockferry.repository.smb_storage import SmbLocation, SmbStorage
from blockferry.repository.storage import Storage
from blockferry.secret_files import read_secret

LOCAL = "file"
S3 = "s3"
SMB = "smb"
SCHEMES = (LOCAL, S3, SMB)
SMB_PORT = 445


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
            " file:///path, s3://bucket/prefix?endpoint=URL or"
            " smb://user@host:port/share/path?password_file=FILE"
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
    query = _query(location, parts.query, {"endpoint", "region", "profile"})
    prefix = unquote(parts.path).strip("/")
    return S3Location(
        bucket=parts.netloc,
        prefix=f"{prefix}/" if prefix else "",
        endpoint=query.get("endpoint"),
        region=query.get("region"),
        profile=query.get("profile"),
    )


def smb_location(location: str) -> tuple[SmbLocation, Path]:
    """The share, path and user an ``smb://`` location names, and its password file."""
    parts = urlsplit(location)
    query = _query(location, parts.query, {"password_file"})
    share, _, path = unquote(parts.path).strip("/").partition("/")
    if not (parts.hostname and parts.username and share):
        raise ConfigError(
            f"repository location {location!r}: an SMB location names a user, a host and"
            " a share: smb://user@host:port/share/path?password_file=FILE"
        )
    if "password_file" not in query or parts.password is not None:
        raise ConfigError(
            f"repository location {location!r}: give the SMB password in a file"
            " (?password_file=FILE, a mounted secret), never in the location"
        )
    where = SmbLocation(
        host=parts.hostname,
        port=parts.port or SMB_PORT,
        share=share,
        prefix=f"{path.strip('/')}/" if path.strip("/") else "",
        user=unquote(parts.username),
    )
    return where, Path(query["password_file"])


def open_storage(location: str, *, check_writes: bool = False, shared: bool = False) -> Storage:
    """The backend of the repository at ``location``; with ``check_writes``, proven to
    keep the put-if-absent the repository's locks and commits need (an S3 store must
    enforce conditional writes), else nothing is read yet. ``shared``: a directory is a
    share other hosts mount (:class:`LocalStorage`'s ``shared``).

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
    if kind == SMB:
        where, password_file = smb_location(location)
        password = read_secret(password_file, "the SMB password file")
        if password is None:
            raise ConfigError(f"repository location {location!r}: no file {password_file}")
        return SmbStorage(where, password=password)
    return LocalStorage(local_path(location), shared=shared)


def _query(location: str, text: str, known: set[str]) -> dict[str, str]:
    query = {key: values[-1] for key, values in parse_qs(text).items()}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(
            f"repository location {location!r}: unknown parameter {', '.join(unknown)}"
            f" ({', '.join(sorted(known))})"
        )
    return query
