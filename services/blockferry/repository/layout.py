"""Where each structure lives in a repository: the names of its objects.

::

    config.json
    generations/<n>                        the repository's generation: the highest n
    keys/                                  reserved for the wrapped master key
    packs/<ab>/<pack-id>.pack              <ab> = the pack id's first two characters
    index/<pack-id>.idx                    one pack index file per sealed pack
    index/snapshot                         the loaded digest map, to start from (derived)
    restorepoints/<job>/<rp-id>/<disk>.fidx
    restorepoints/<job>/<rp-id>/restorepoint.json   written last: the commit marker
    staging/<session-id>/<disk>.fidx       fixed indexes waiting for their commit
    locks/<kind>-<lock-id>.json
    damaged/restorepoints/<job>/<rp-id>/   restore points set aside by the operator
    damaged/staging/<session-id>/          staged fixed indexes set aside by the operator
    quarantine/<pack-id>-<digest>          a chunk copy found damaged: never located again

Temporaries are the storage's own business (:mod:`storage`): no name here has one.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
RESTORE_POINT_FILE = "restorepoint.json"
PACK_SUFFIX = ".pack"
INDEX_SUFFIX = ".idx"
FIXED_INDEX_SUFFIX = ".fidx"
PACKS = "packs/"
INDEX = "index/"
INDEX_SNAPSHOT = "index/snapshot"
RESTORE_POINTS = "restorepoints/"
STAGING = "staging/"
LOCKS = "locks/"
DAMAGED = "damaged/"
QUARANTINE = "quarantine/"
GENERATIONS = "generations/"


def pack(pack_id: str) -> str:
    return f"{PACKS}{pack_id[:2]}/{pack_id}{PACK_SUFFIX}"


def index_file(pack_id: str) -> str:
    return f"{INDEX}{pack_id}{INDEX_SUFFIX}"


def quarantined(pack_id: str, digest: bytes) -> str:
    return QUARANTINE + quarantine_name(pack_id, digest)


def job_prefix(job: str) -> str:
    return f"{RESTORE_POINTS}{job}/"


def restore_point_prefix(job: str, rp_id: str) -> str:
    return f"{RESTORE_POINTS}{job}/{rp_id}/"


def restore_point_file(job: str, rp_id: str) -> str:
    return restore_point_prefix(job, rp_id) + RESTORE_POINT_FILE


def fixed_index(job: str, rp_id: str, disk: str) -> str:
    return restore_point_prefix(job, rp_id) + fixed_index_name(disk)


def staging_prefix(session_id: str) -> str:
    return f"{STAGING}{session_id}/"


def staged_fixed_index(session_id: str, disk: str) -> str:
    return staging_prefix(session_id) + fixed_index_name(disk)


def damaged_restore_point_prefix(job: str, rp_id: str) -> str:
    return f"{DAMAGED}restorepoints/{job}/{rp_id}/"


def damaged_staging_prefix(session_id: str) -> str:
    return f"{DAMAGED}staging/{session_id}/"


def lock(name: str) -> str:
    return LOCKS + name


def parts(name: str, prefix: str) -> list[str]:
    """The components of ``name`` after ``prefix`` (``restorepoints/j/r/x`` under
    ``restorepoints/`` gives ``[j, r, x]``)."""
    return name[len(prefix) :].split("/")


def is_sealed(name: str) -> bool:
    """Whether an encrypted repository seals this object whole: pack index files, fixed
    indexes and restore points' metadata (chunks are sealed one by one inside packs)."""
    return name.endswith((INDEX_SUFFIX, FIXED_INDEX_SUFFIX, RESTORE_POINT_FILE))


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
