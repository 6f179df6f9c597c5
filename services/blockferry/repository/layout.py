"""Where each structure lives inside a repository directory.

::

    config.json
    keys/                                  reserved for the wrapped master key
    packs/<ab>/<pack-id>.pack              <ab> = the pack id's first two characters
    packs/<ab>/.<pack-id>.pack.tmp         a pack still being written
    index/<pack-id>.idx                    one pack index file per sealed pack
    index/snapshot                         the loaded digest map, to start from (derived)
    restorepoints/<job>/<rp-id>/restorepoint.json, <disk>.fidx
    restorepoints/<job>/.tmp-<rp-id>-<random>/  a restore point being committed or removed
    staging/<session-id>/<disk>.fidx       fixed indexes waiting for their commit
    locks/<kind>-<lock-id>.json
    damaged/restorepoints/<job>/<rp-id>/   restore points set aside by the operator
    damaged/staging/<session-id>/          staged fixed indexes set aside by the operator
    quarantine/<pack-id>-<digest>          a chunk copy found damaged: never located again
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"
RESTORE_POINT_FILE = "restorepoint.json"
PACK_SUFFIX = ".pack"
PACK_TEMP_SUFFIX = ".pack.tmp"
INDEX_SUFFIX = ".idx"
FIXED_INDEX_SUFFIX = ".fidx"
COMMIT_TEMP_PREFIX = ".tmp-"
SUBDIRECTORIES = ("keys", "packs", "index", "restorepoints", "staging", "locks")


@dataclass(frozen=True)
class Layout:
    """Paths of a repository rooted at ``root``; builds paths, never touches the disk."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def packs(self) -> Path:
        return self.root / "packs"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def index_snapshot(self) -> Path:
        return self.index / "snapshot"

    @property
    def restore_points(self) -> Path:
        return self.root / "restorepoints"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def damaged(self) -> Path:
        return self.root / "damaged"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def quarantined(self, pack_id: str, digest: bytes) -> Path:
        return self.quarantine / quarantine_name(pack_id, digest)

    def damaged_restore_point(self, job: str, rp_id: str) -> Path:
        return self.damaged / "restorepoints" / job / rp_id

    def damaged_staging(self, session_id: str) -> Path:
        return self.damaged / "staging" / session_id

    def pack_dir(self, pack_id: str) -> Path:
        return self.packs / pack_id[:2]

    def pack(self, pack_id: str) -> Path:
        return self.pack_dir(pack_id) / f"{pack_id}{PACK_SUFFIX}"

    def pack_temp(self, pack_id: str) -> Path:
        return self.pack_dir(pack_id) / f".{pack_id}{PACK_TEMP_SUFFIX}"

    def index_file(self, pack_id: str) -> Path:
        return self.index / f"{pack_id}{INDEX_SUFFIX}"

    def job_dir(self, job: str) -> Path:
        return self.restore_points / job

    def restore_point_dir(self, job: str, rp_id: str) -> Path:
        return self.job_dir(job) / rp_id

    def restore_point_temp_dir(self, job: str, rp_id: str) -> Path:
        """A new name, unique per call, for a restore point being built or removed."""
        return self.job_dir(job) / f"{COMMIT_TEMP_PREFIX}{rp_id}-{secrets.token_hex(4)}"

    def restore_point_file(self, job: str, rp_id: str) -> Path:
        return self.restore_point_dir(job, rp_id) / RESTORE_POINT_FILE

    def fixed_index(self, job: str, rp_id: str, disk: str) -> Path:
        return self.restore_point_dir(job, rp_id) / fixed_index_name(disk)

    def staging_dir(self, session_id: str) -> Path:
        return self.staging / session_id

    def staged_fixed_index(self, session_id: str, disk: str) -> Path:
        return self.staging_dir(session_id) / fixed_index_name(disk)

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, for messages and reports."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def quarantine_name(pack_id: str, digest: bytes) -> str:
    """The file name that quarantines the copy of chunk ``digest`` in pack ``pack_id``."""
    return f"{pack_id}-{digest.hex()}"


def parse_quarantine_name(name: str) -> tuple[str, bytes] | None:
    """(pack id, digest) of a quarantine file name, or None if it is not one."""
    pack_id, _, digest = name.partition("-")
    if len(pack_id) != 32 or len(digest) != 64:
        return None
    try:
        bytes.fromhex(pack_id)
        return pack_id, bytes.fromhex(digest)
    except ValueError:
        return None


def fixed_index_name(disk: str) -> str:
    """The file name of a disk's fixed index."""
    return f"{disk}{FIXED_INDEX_SUFFIX}"
