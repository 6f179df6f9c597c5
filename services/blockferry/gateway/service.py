"""The gateway role: the target mover's pipeline placed next to a share or a bucket,
writing repositories on S3-compatible storage, SMB shares and mounted shares."""

from __future__ import annotations

from blockferry.ingest.role import IngestRole
from blockferry.repository.locations import LOCAL, S3, SMB


class Gateway(IngestRole):
    name = "gateway"
    schemes = (LOCAL, S3, SMB)
    directories_shared = True
