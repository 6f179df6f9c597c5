"""The on-disk repository format v1: packs, pack indexes, fixed indexes, restore points.

Pure file I/O, no Kafka. ``schemas/repository/FORMAT.md`` describes every
structure byte by byte; the modules named after each structure hold its parser.
"""

from blockferry.repository.check import CheckReport, Problem, ProblemKind, check
from blockferry.repository.config import RepositoryConfig
from blockferry.repository.fixed_index import DigestArray, FixedIndex
from blockferry.repository.locks import HeldLock, LockInfo, LockKind, RepositoryLocks
from blockferry.repository.pack import PackEntry, PackWriter, SealedPack
from blockferry.repository.repository import Repository
from blockferry.repository.restore import RestoreResult, restore_disk
from blockferry.repository.restore_point import RestorePoint, RestorePointDisk
from blockferry.repository.verify import Damage, DamageKind, VerifyReport, verify

__all__ = [
    "CheckReport",
    "Damage",
    "DamageKind",
    "DigestArray",
    "FixedIndex",
    "HeldLock",
    "LockInfo",
    "LockKind",
    "PackEntry",
    "PackWriter",
    "Problem",
    "ProblemKind",
    "Repository",
    "RepositoryConfig",
    "RepositoryLocks",
    "RestorePoint",
    "RestorePointDisk",
    "RestoreResult",
    "SealedPack",
    "VerifyReport",
    "check",
    "restore_disk",
    "verify",
]
