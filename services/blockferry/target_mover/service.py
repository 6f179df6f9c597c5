"""The target mover role: every write to the directly attached repositories it owns."""

from __future__ import annotations

from blockferry.ingest.role import IngestRole
from blockferry.repository.locations import LOCAL


class TargetMover(IngestRole):
    name = "target-mover"
    schemes = (LOCAL,)
    directories_shared = False
