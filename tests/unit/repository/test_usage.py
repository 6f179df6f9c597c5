"""A repository's usage as the metrics show it: its packs' bytes, its quarantined chunks,
its oldest lock, and on a local one the free space of its file system."""

from __future__ import annotations

import shutil
import time

from blockferry.ingest.usage import measure
from blockferry.repository import Repository
from blockferry.repository.local_storage import LocalStorage
from tests.unit.repository.repo_helpers import backend, backup, block, root


def test_size_quarantine_and_locks_are_measured(repo: Repository) -> None:
    empty = measure(repo)
    assert (empty.size_bytes, empty.quarantined_chunks, empty.oldest_lock_seconds) == (0, 0, 0)

    backup(repo, "web", {"sda": block("a") + block("b")})
    packs = sum(info.size for info in repo.sealed_packs().values())
    assert packs > 0 and measure(repo).size_bytes == packs

    entry = next(iter(repo.located_entries()))
    repo.quarantine(entry, "a flipped byte")
    with repo.shared_lock("verify"):
        time.sleep(1.1)
        held = measure(repo)
    assert held.quarantined_chunks == 1
    assert held.oldest_lock_seconds >= 1
    assert measure(repo).oldest_lock_seconds == 0, "released"


def test_free_space_is_known_for_a_local_repository_only(repo: Repository) -> None:
    usage = measure(repo)
    if not isinstance(backend(repo), LocalStorage):
        assert usage.free_bytes is None and usage.filesystem_bytes is None
    else:
        disk = shutil.disk_usage(root(repo))
        assert usage.filesystem_bytes == disk.total
        assert usage.free_bytes is not None and 0 < usage.free_bytes <= disk.total
