"""A set of digests in a flat table: membership through growth, at bytes a digest."""

from __future__ import annotations

import random

import pytest

from blockferry.core.digest_table import DigestSet


def test_a_digest_set_holds_what_a_set_would() -> None:
    rng = random.Random(1)
    digests = [rng.randbytes(32) for _ in range(30000)]
    found = DigestSet(digests[:20000])
    found.add(digests[0])  # again
    assert len(found) == 20000
    assert all(d in found for d in digests[:20000])
    assert not any(d in found for d in digests[20000:])
    assert "not bytes" not in found
    assert found.bytes_used / len(found) < 110


def test_a_digest_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DigestSet().add(b"short")
