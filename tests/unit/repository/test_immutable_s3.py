"""An immutable repository on S3 (a real MinIO server): a bucket with Object Lock, the
gateway's backup credentials and the maintenance credentials of `repo prune|gc`, each
with the policy `blockferry repo s3-policy` prints."""

from __future__ import annotations

from pathlib import Path

import botocore.exceptions
import pytest

from blockferry.core.errors import RepositoryError
from blockferry.repository import Repository, layout, restore_disk
from blockferry.repository.keys import Secret, write_key_file
from blockferry.repository.retention import Policy
from blockferry.repository.s3_policies import BACKUP, MAINTENANCE, policy
from blockferry.repository.s3_storage import S3Location, S3Storage
from tests.minio import MinioServer
from tests.unit.repository.repo_helpers import BLOCK_SIZE, backup, make_image


def test_the_backup_credentials_cannot_destroy_a_restore_point(
    minio: MinioServer, tmp_path: Path
) -> None:
    location = S3Location(minio.new_bucket(retention_days=1), "repo/", minio.endpoint)
    as_backup = S3Storage(location, credentials=minio.add_user(policy(location, BACKUP)))
    as_maintenance = S3Storage(location, credentials=minio.add_user(policy(location, MAINTENANCE)))
    key_file = tmp_path / "repo.key"
    write_key_file(key_file)
    secret = Secret.key_file(key_file)
    Repository.init(as_maintenance, block_size=BLOCK_SIZE, shard_count=2, secret=secret)

    gateway = Repository.open(as_backup, secret=secret)
    as_backup.check_conditional_writes()  # its probe is one of the deletes it may do
    old = backup(gateway, "vm", {"d": make_image("abcA0")})
    new = backup(gateway, "vm", {"d": make_image("abcB0")}, parent=old.id)
    pack_key = location.prefix + layout.pack(gateway.sealed_pack_ids()[0])
    marker_key = location.prefix + layout.restore_point_file("vm", old.id)

    server = as_backup.client
    for key in (pack_key, marker_key, location.prefix + layout.CONFIG_FILE):
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            server.delete_object(Bucket=location.bucket, Key=key)
    with pytest.raises(RepositoryError, match="AccessDenied"):
        gateway.prune("vm", Policy(keep_last=1))
    assert [p.id for p in gateway.restore_points("vm")] == [old.id, new.id]
    restore_disk(gateway, old.id, "d", tmp_path / "old.img", force=False)
    assert (tmp_path / "old.img").read_bytes() == make_image("abcA0")

    # the maintenance credentials prune: the restore point is gone from the repository,
    # its locked versions stay in the bucket until the retention is over
    maintenance = Repository.open(as_maintenance, secret=secret)
    assert maintenance.prune("vm", Policy(keep_last=1)).removed == [old.id]
    assert [p.id for p in maintenance.restore_points("vm")] == [new.id]
    versions = as_maintenance.client.list_object_versions(Bucket=location.bucket, Prefix=marker_key)
    assert [v["IsLatest"] for v in versions["Versions"]] == [False], "hidden, not gone"
    with pytest.raises(botocore.exceptions.ClientError, match="WORM"):
        as_maintenance.client.delete_object(
            Bucket=location.bucket, Key=marker_key, VersionId=versions["Versions"][0]["VersionId"]
        )

    # an overwrite by the backup credentials only adds a version: the sealed one stays
    server.put_object(Bucket=location.bucket, Key=pack_key, Body=b"garbage")
    original = [
        v
        for v in server.list_object_versions(Bucket=location.bucket, Prefix=pack_key)["Versions"]
        if not v["IsLatest"]
    ]
    assert len(original) == 1
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        server.delete_object(
            Bucket=location.bucket, Key=pack_key, VersionId=original[0]["VersionId"]
        )
