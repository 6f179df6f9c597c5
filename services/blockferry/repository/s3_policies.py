"""The IAM policies of an immutable (append-only) repository on S3.

The bucket has versioning and Object Lock with a default retention, so every version
of every object is kept, unchanged, for the retention period, whoever asks. Two sets of
credentials use the repository:

* **backup** — held by the gateway, which takes commands from Kafka: it may read,
  create objects and abort its own uploads, and delete only what a backup itself
  removes (its locks, the staging of its sessions, the probe of conditional writes).
  It can delete no pack, index or restore point; an overwrite only adds a version, the
  locked one stays.
* **maintenance** — held by whoever runs ``blockferry repo prune`` and ``repo gc``,
  never by a role: it may also delete. A deletion adds a delete marker; the versions
  it hides go when the retention is over (a lifecycle rule expiring noncurrent
  versions).
"""

from __future__ import annotations

import json
from typing import Any

from blockferry.repository import layout
from blockferry.repository.s3_storage import S3Location

BACKUP = "backup"
MAINTENANCE = "maintenance"
KINDS = (BACKUP, MAINTENANCE)

BACKUP_DELETES = (layout.LOCKS, layout.STAGING, ".probe/")
"""What a backup itself deletes, and so the backup credentials may."""


def policy(location: S3Location, kind: str) -> dict[str, Any]:
    """The IAM policy document of the ``kind`` credentials of the repository at
    ``location``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of credentials {kind!r}: {' or '.join(KINDS)}")
    bucket = f"arn:aws:s3:::{location.bucket}"
    objects = f"{bucket}/{location.prefix}"
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"],
            "Resource": [bucket],
        },
        {
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": [f"{objects}*"],
        },
    ]
    deletable = (
        [f"{objects}*"]
        if kind == MAINTENANCE
        else [f"{objects}{prefix}*" for prefix in BACKUP_DELETES]
    )
    statements.append({"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": deletable})
    return {"Version": "2012-10-17", "Statement": statements}


def policy_json(location: S3Location, kind: str) -> str:
    return json.dumps(policy(location, kind), indent=2)
