"""What the S3 backend does beyond the storage contract (test_storage.py runs that on it):
multipart packs, racing commits, abandoned uploads, a store that ignores conditional
writes, an unreachable store, request counts. Against a real MinIO server."""

from __future__ import annotations

import os
import threading

import pytest

from blockferry.core.errors import RepositoryError, RepositoryUnavailable
from blockferry.repository.s3_storage import PART_SIZE, S3Credentials, S3Location, S3Storage
from blockferry.repository.storage import ObjectExists, ObjectNotFound
from tests.minio import MinioServer
from tests.system import free_port


@pytest.fixture
def storage(minio: MinioServer) -> S3Storage:
    return minio.storage(minio.new_bucket())


def test_a_pack_larger_than_a_part_is_a_multipart_upload(storage: S3Storage) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)
    writer = storage.writer("packs/ab/big.pack")
    for start in range(0, len(data), 1 << 20):
        writer.write([data[start : start + (1 << 20)]])
    uploads = storage.client.list_multipart_uploads(
        Bucket=storage.location.bucket, Prefix="repo/packs/ab/big.pack"
    )  # MinIO lists the uploads of one whole key only
    assert len(uploads.get("Uploads", [])) == 1
    assert storage.list_objects("packs/") == [], "nothing visible before the commit"
    writer.commit()
    assert storage.get("packs/ab/big.pack") == data
    assert storage.get_range("packs/ab/big.pack", PART_SIZE - 3, 6) == data[PART_SIZE - 3 :][:6]
    assert storage.leftovers() == []
    requests = storage.requests()
    assert requests["CreateMultipartUpload"] == 1
    assert requests["UploadPart"] == 3
    assert requests["CompleteMultipartUpload"] == 1


def test_racing_multipart_commits_have_one_winner(storage: S3Storage) -> None:
    writers = []
    for fill in (b"a", b"b", b"c"):
        writer = storage.writer("packs/ab/contested.pack")
        writer.write([fill * (PART_SIZE + 10)])
        writers.append(writer)
    results: list[str] = []

    def commit(writer: object) -> None:
        try:
            writer.commit()  # type: ignore[attr-defined]
            results.append("won")
        except ObjectExists:
            results.append("lost")

    threads = [threading.Thread(target=commit, args=(writer,)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["lost", "lost", "won"]
    assert len(set(storage.get("packs/ab/contested.pack"))) == 1
    assert storage.leftovers() == [], "the losers' uploads are aborted"


def test_a_store_that_ignores_conditional_writes_is_refused(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.check_conditional_writes()  # MinIO enforces them
    assert storage.list_objects("") == [] and storage.leftovers() == []

    def drop_if_none_match(params: dict[str, object], **_: object) -> None:
        params.pop("IfNoneMatch", None)

    storage.client.meta.events.register("provide-client-params.s3.PutObject", drop_if_none_match)
    with pytest.raises(RepositoryError, match="ignores conditional writes"):
        storage.check_conditional_writes()


def test_errors_name_the_object(storage: S3Storage, minio: MinioServer) -> None:
    with pytest.raises(ObjectNotFound, match=f"s3://{storage.location.bucket}/repo/missing"):
        storage.get("missing")
    denied = S3Storage(
        S3Location(storage.location.bucket, "repo/", minio.endpoint),
        credentials=S3Credentials("nobody", "wrong-secret"),
    )
    with pytest.raises(RepositoryError, match=r"repo/config\.json: InvalidAccessKeyId"):
        denied.put("config.json", b"x")
    assert "wrong-secret" not in repr(denied.location) + repr(minio.credentials())


def test_an_unreachable_store_is_unavailable_not_a_verdict() -> None:
    storage = S3Storage(
        S3Location("bucket", "repo/", f"http://127.0.0.1:{free_port()}"),
        credentials=S3Credentials("someone", "secret"),
        max_attempts=2,
        connect_timeout=1,
    )
    with pytest.raises(
        RepositoryUnavailable, match=r"reading s3://bucket/repo/config\.json: .*connect"
    ):
        storage.get("config.json")
    assert storage.requests()["GetObject"] >= 2, "retried"
