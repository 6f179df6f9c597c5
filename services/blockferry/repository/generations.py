"""The repository's generation: the time that garbage collection compares.

A repository counts *generations*: each garbage collection and each backup's start
begins the next one. The count is kept as empty marker objects ``generations/<n>``,
created with put-if-absent, and the generation now is the highest marker (0 before
the first). Two processes starting one at the same time may both get *n* + 1; the
count never goes back, whoever reads it.

Each pack's footer records the generation in which it was sealed, read after its last
chunk was added. So a chunk sent after generation *g* began lies in a pack of
generation *g* or later: GC tells recent packs by these numbers, never by a clock of
the storage, a host or the orchestrator.
"""

from __future__ import annotations

from blockferry.repository import layout
from blockferry.repository.storage import ObjectExists, Storage

MAX_GENERATION = 2**32 - 1
"""A pack footer holds a generation in 32 bits."""
_DIGITS = 10


def current(storage: Storage) -> int:
    """The generation now: the highest marker (names that are not one are ignored)."""
    numbers = _numbers(storage).values()
    return min(max(numbers, default=0), MAX_GENERATION)


def start(storage: Storage) -> int:
    """Begin the next generation and return it."""
    generation = min(current(storage) + 1, MAX_GENERATION)
    try:
        storage.put_new(_marker(generation), b"")
    except ObjectExists:
        pass  # begun by another process meanwhile: it is ours too
    return generation


def forget_before(storage: Storage, generation: int) -> None:
    """Remove the markers of generations before ``generation`` (GC, after starting it);
    other names are left alone."""
    storage.delete(*(name for name, number in _numbers(storage).items() if number < generation))


def _numbers(storage: Storage) -> dict[str, int]:
    """Each marker's name and generation (names that are not a marker's left out)."""
    found = {}
    for info in storage.list_objects(layout.GENERATIONS):
        digits = info.name[len(layout.GENERATIONS) :]
        if digits.isdigit() and len(digits) == _DIGITS:
            found[info.name] = int(digits)
    return found


def _marker(generation: int) -> str:
    return f"{layout.GENERATIONS}{generation:0{_DIGITS}d}"
