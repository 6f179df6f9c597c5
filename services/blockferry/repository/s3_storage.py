"""The S3 backend: a repository's objects in a bucket of any S3-compatible store.

An object ``a/b/c`` is the key ``<prefix>a/b/c``. How each guarantee of
:class:`~blockferry.repository.storage.Storage` is kept:

* **Atomic puts**: S3 makes a PutObject or a completed multipart upload visible whole.
* **Put-if-absent**: ``If-None-Match: *`` on PutObject and CompleteMultipartUpload; the
  store answers 412 to the loser of a race. A store that ignores the header would let
  two creators both win, so :meth:`S3Storage.check_conditional_writes` proves it at
  start.
* **Writers** stream a pack as a multipart upload, one part per ``part_size`` bytes (a
  smaller object is one PutObject at the commit), so nothing is spooled to local disk.
  A writer whose process died leaves an incomplete upload: invisible, and aborted by
  :meth:`S3Storage.remove_leftovers` once older than ``abandoned_upload_s``
  (:data:`ABANDONED_UPLOAD_S`) by the store's clock (S3 cannot tell whether its writer
  lives; a pack's upload takes seconds). MinIO lists the uploads of a whole key only, so
  there it finds none: MinIO expires stale uploads itself (``api.stale_uploads_expiry``,
  24 h), as an ``AbortIncompleteMultipartUpload`` lifecycle rule does on other stores.
* **Touch** copies an object onto itself with new metadata, which sets its
  LastModified; a copy of a missing object fails, so touch never creates.
* **Deletes** go one by one, in order: S3 has no ordered batch delete.
* **Retries**: botocore's standard mode retries throttling, 5xx and connection errors
  with exponential backoff and jitter (``max_attempts``), and every request has connect
  and read timeouts, so an unreachable store surfaces as RepositoryUnavailable, which
  the ingest pipeline waits out, not a hang.

Credentials are given (settings, a mounted secret), or else come from botocore's chain:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, or a shared credentials file
(``AWS_SHARED_CREDENTIALS_FILE``), its profile chosen by the repository URL's ``profile``.

Modification times (a lock's heartbeat) are whole seconds: HEAD's Last-Modified.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from botocore.config import Config

from blockferry.core.errors import RepositoryError, RepositoryFull, RepositoryUnavailable
from blockferry.repository.storage import (
    Data,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Parts,
    WriterBase,
    check_prefix,
    checked_name,
    parts_of,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ABANDONED_UPLOAD_S = 3600.0
"""An incomplete multipart upload this old (by the store's clock) has no live writer."""

PART_SIZE = 8 * 1024 * 1024
"""Bytes per part of a multipart upload (S3 needs at least 5 MiB but for the last)."""

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_EXISTS = frozenset({"PreconditionFailed", "412"})
_FULL = frozenset({"XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded"})
# S3 answers 409 to a conditional write racing another on the same key: try again.
_CONFLICT = frozenset({"ConditionalRequestConflict", "409", "OperationAborted"})
_CONFLICT_RETRIES = 5
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


@dataclass(frozen=True)
class S3Location:
    """Where a repository lives in S3-compatible storage (``s3://`` URLs)."""

    bucket: str
    prefix: str = ""
    """Key prefix, empty or ending with ``/``."""
    endpoint: str | None = None
    """The store's URL (MinIO, Ceph, ...); None: AWS."""
    region: str | None = None
    profile: str | None = None
    """The profile of the shared credentials file to use; None: the default chain."""

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"


@dataclass(frozen=True)
class S3Credentials:
    """An access key (from settings or a mounted secret); never logged."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3Storage:
    """A repository's objects under ``location``; see the module docstring and
    :class:`~blockferry.repository.storage.Storage` for the guarantees."""

    def __init__(
        self,
        location: S3Location,
        *,
        credentials: S3Credentials | None = None,
        part_size: int = PART_SIZE,
        abandoned_upload_s: float = ABANDONED_UPLOAD_S,
        max_attempts: int = 8,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 16,
    ) -> None:
        self.location = location
        self.part_size = part_size
        self.abandoned_upload_s = abandoned_upload_s
        session = boto3.session.Session(
            profile_name=location.profile,
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
        )
        self._client: S3Client = session.client(
            "s3",
            endpoint_url=location.endpoint,
            region_name=location.region or "us-east-1",
            config=Config(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max_connections,
                s3={"addressing_style": "path" if location.endpoint else "auto"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._client.meta.events.register("before-send.s3", self._count_request)

    def __repr__(self) -> str:
        return f"S3Storage({self.location.url()!r})"

    @property
    def client(self) -> S3Client:
        """The boto3 client (for this backend's tests and tools)."""
        return self._client

    def requests(self) -> Counter[str]:
        """HTTP requests sent so far (retries included), by S3 operation."""
        with self._requests_lock:
            return Counter(self._requests)

    def where(self, name: str = "") -> str:
        return self.location.url(name)

    def key(self, name: str) -> str:
        """The key of object ``name``."""
        return self.location.prefix + checked_name(name)

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str) -> bytes:
        with self._errors("reading", name):
            response = self._client.get_object(Bucket=self.location.bucket, Key=self.key(name))
            return response["Body"].read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with self._errors(f"reading {length} bytes at {offset} of", name):
            try:
                response = self._client.get_object(
                    Bucket=self.location.bucket,
                    Key=self.key(name),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except botocore.exceptions.ClientError as exc:
                if _code(exc) == "InvalidRange":  # the object ends before offset
                    self.stat(name)
                    return b""
                raise
            return response["Body"].read()

    def stat(self, name: str) -> ObjectInfo:
        with self._errors("reading", name):
            head = self._client.head_object(Bucket=self.location.bucket, Key=self.key(name))
        return ObjectInfo(name, head["ContentLength"], head["LastModified"].astimezone(UTC))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        check_prefix(prefix)
        found: list[ObjectInfo] = []
        strip = len(self.location.prefix)
        with self._errors("listing", prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=self.location.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][strip:]
                    if any(part.startswith(".") or not part for part in name.split("/")):
                        continue  # not an object of the repository
                    found.append(
                        ObjectInfo(name, item["Size"], item["LastModified"].astimezone(UTC))
                    )
        return found

    # -- writes ---------------------------------------------------------------------------

    def put(self, name: str, data: Parts) -> None:
        with self._errors("writing", name):
            self._client.put_object(
                Bucket=self.location.bucket, Key=self.key(name), Body=_joined(data)
            )

    def put_new(self, name: str, data: Parts) -> None:
        body = _joined(data)
        self._conditionally(
            name,
            lambda: self._client.put_object(
                Bucket=self.location.bucket, Key=self.key(name), Body=body, IfNoneMatch="*"
            ),
        )

    def writer(self, name: str) -> S3Writer:
        return S3Writer(self, name, self.key(name))

    def touch(self, name: str) -> None:
        key = self.key(name)
        with self._errors("touching", name):
            try:
                self._client.copy_object(
                    Bucket=self.location.bucket,
                    Key=key,
                    CopySource={"Bucket": self.location.bucket, "Key": key},
                    MetadataDirective="REPLACE",
                    Metadata={"touched": datetime.now(UTC).isoformat()},
                )
            except botocore.exceptions.ClientError as exc:
                if _code(exc) == "NoSuchKey" or _status(exc) == 404:
                    raise ObjectNotFound(f"touching {self.where(name)}: no such object") from exc
                raise

    def delete(self, *names: str) -> None:
        for name in names:
            with self._errors("removing", name):
                self._client.delete_object(Bucket=self.location.bucket, Key=self.key(name))

    # -- housekeeping ---------------------------------------------------------------------

    def leftovers(self) -> list[ObjectInfo]:
        return [
            ObjectInfo(f"{upload['Key'][len(self.location.prefix) :]} (upload)", 0, initiated)
            for upload, initiated in self._uploads()
        ]

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        uploads = self._uploads()
        if not uploads:
            return 0
        now = self._store_now()
        age = max(min_age, self.abandoned_upload_s)
        removed = 0
        for upload, initiated in uploads:
            if (now - initiated).total_seconds() < age:
                continue
            with self._errors("aborting the upload of", upload["Key"]):
                try:
                    self._client.abort_multipart_upload(
                        Bucket=self.location.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                except botocore.exceptions.ClientError as exc:
                    if _code(exc) != "NoSuchUpload":
                        raise
                    continue
            removed += 1
        return removed

    def close(self) -> None:
        """Nothing to release: the client's connections are pooled and reused."""

    def check_conditional_writes(self) -> None:
        """Prove that the store refuses a put-if-absent of an existing key (a store that
        ignores ``If-None-Match`` would let two GCs or two commits both win).

        Raises:
            RepositoryError: it does not, naming the store.
        """
        key = f"{self.location.prefix}.probe/{secrets.token_hex(8)}"
        bucket = self.location.bucket
        try:
            with self._errors("writing", ".probe/"):
                self._client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
            try:
                with self._errors("writing", ".probe/"):
                    self._client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
            except RepositoryError as exc:
                if isinstance(exc.__cause__, botocore.exceptions.ClientError) and (
                    _code(exc.__cause__) in _EXISTS or _status(exc.__cause__) == 412
                ):
                    return
                raise
            raise RepositoryError(
                f"{self.where()}: the store ignores conditional writes (If-None-Match), which"
                " the repository's locks and commits need; use a store that enforces them"
            )
        finally:
            with contextlib.suppress(RepositoryError), self._errors("removing", ".probe/"):
                self._client.delete_object(Bucket=bucket, Key=key)

    # -- internals ------------------------------------------------------------------------

    def _count_request(self, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._requests_lock:
            self._requests[operation] += 1

    def _uploads(self) -> list[tuple[dict[str, Any], datetime]]:
        found: list[tuple[dict[str, Any], datetime]] = []
        with self._errors("listing the uploads under", ""):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.location.bucket, Prefix=self.location.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", ()):
                    found.append((dict(upload), upload["Initiated"].astimezone(UTC)))
        return found

    def _store_now(self) -> datetime:
        """The store's clock, from the Date of a response."""
        with self._errors("reading the clock of", ""):
            response = self._client.list_objects_v2(
                Bucket=self.location.bucket, Prefix=self.location.prefix, MaxKeys=1
            )
        date = response["ResponseMetadata"]["HTTPHeaders"].get("date")
        return parsedate_to_datetime(date).astimezone(UTC) if date else datetime.now(UTC)

    def _conditionally(self, name: str, call: Any) -> None:
        """Run a conditional write of ``name``, as put-if-absent."""
        for attempt in range(_CONFLICT_RETRIES + 1):
            with self._errors("writing", name):
                try:
                    call()
                    return
                except botocore.exceptions.ClientError as exc:
                    if _code(exc) in _EXISTS or _status(exc) == 412:
                        raise ObjectExists(
                            f"writing {self.where(name)}: it exists already"
                        ) from exc
                    if _code(exc) not in _CONFLICT or attempt == _CONFLICT_RETRIES:
                        raise

    def _errors(self, action: str, name: str) -> _Errors:
        return _Errors(self, action, name)


class _Errors:
    """Translates what boto3 raises while ``action`` on ``name`` into the repository's
    errors, each naming the object."""

    def __init__(self, storage: S3Storage, action: str, name: str) -> None:
        self._where = storage.where(name)
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, RepositoryError):
            return
        message = f"{self._action} {self._where}"
        if isinstance(exc, botocore.exceptions.ClientError):
            code = _code(exc)
            if code in _NOT_FOUND or _status(exc) == 404:
                raise ObjectNotFound(f"{message}: no such object") from exc
            if _status(exc) >= 500:  # still so after botocore's retries
                raise RepositoryUnavailable(f"{message}: the store answers {code}") from exc
            if code in _FULL:
                raise RepositoryFull(
                    f"{message}: the store has no room ({code}); free space or raise the"
                    " quota, then retry"
                ) from exc
            detail = exc.response.get("Error", {}).get("Message") or code
            raise RepositoryError(f"{message}: {code}: {detail}") from exc
        if isinstance(exc, _UNREACHABLE):
            raise RepositoryUnavailable(f"{message}: {exc}") from exc
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            raise RepositoryError(f"{message}: {exc}") from exc


class S3Writer(WriterBase):
    """A new object streamed as a multipart upload; see :class:`ObjectWriter`."""

    def __init__(self, storage: S3Storage, name: str, key: str) -> None:
        super().__init__(name, storage.where(name))
        self._storage = storage
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._open = True

    def write(self, parts: Sequence[Data]) -> None:
        self._require_open()
        for part in parts:
            self._buffer += part
            self._size += len(part)
        try:
            while len(self._buffer) >= self._storage.part_size:
                self._send_part(self._storage.part_size)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        self._require_open()
        storage = self._storage
        bucket = storage.location.bucket
        try:
            if self._upload_id is None:
                body = bytes(self._buffer)
                storage._conditionally(
                    self._name,
                    lambda: storage.client.put_object(
                        Bucket=bucket, Key=self._key, Body=body, IfNoneMatch="*"
                    ),
                )
            else:
                if self._buffer:
                    self._send_part(len(self._buffer))
                upload_id = self._upload_id
                storage._conditionally(
                    self._name,
                    lambda: storage.client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=self._key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": self._parts},  # type: ignore[typeddict-item]
                        IfNoneMatch="*",
                    ),
                )
                self._upload_id = None
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._buffer = bytearray()

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            try:  # what is left is reaped by remove_leftovers
                self._storage.client.abort_multipart_upload(
                    Bucket=self._storage.location.bucket, Key=self._key, UploadId=upload_id
                )
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
                pass

    def _send_part(self, length: int) -> None:
        storage = self._storage
        with storage._errors("writing", self._name):
            if self._upload_id is None:
                created = storage.client.create_multipart_upload(
                    Bucket=storage.location.bucket, Key=self._key
                )
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            sent = storage.client.upload_part(
                Bucket=storage.location.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._buffer[:length]),
            )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        del self._buffer[:length]

    def _require_open(self) -> None:
        if not self._open:
            raise self._finished()


def _joined(data: Parts) -> bytes:
    parts = parts_of(data)
    return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
