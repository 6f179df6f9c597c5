"""Named points inside the repository's multi-step work, where tests pause a thread or
inject a fault into the real code.

Production code only calls :meth:`Hooks.reached`; with no handler registered that is
one dictionary look-up. A test registers handlers with :meth:`Hooks.on` on a real
``Repository`` (``repo.hooks``) and so can stop garbage collection in the middle of its
scan, or a commit before its rename, while another thread works on the same files.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable


class Point(enum.StrEnum):
    """The places a hook can be attached to."""

    GC_HALF_SCANNED = "gc.half-scanned"
    """GC has read one of its two sources of live digests (staged fixed indexes, then
    committed restore points) and not yet the other."""
    GC_SCANNED = "gc.scanned"
    """GC knows what is live and which packs go, and has deleted nothing yet."""
    GC_DEAD_PACKS_REMOVED = "gc.dead-packs-removed"
    """GC has deleted the packs with nothing live and not yet repacked any."""
    COMMIT_TEMP_CREATED = "commit.temp-created"
    """A commit created its temporary restore point directory (still empty)."""
    COMMIT_TEMP_READY = "commit.temp-ready"
    """A commit's temporary directory is complete; it is renamed into place next."""
    PRUNE_DECIDED = "prune.decided"
    """Prune knows which restore points go and has removed none yet."""
    LOCK_BUSY = "lock.busy"
    """A lock could not be taken because a conflicting one is held; it will retry."""


class Hooks:
    """Handlers per point; each is called, in the thread that reached it, in order."""

    def __init__(self) -> None:
        self._handlers: dict[Point, list[Callable[[], None]]] = {}
        self._guard = threading.Lock()

    def on(self, point: Point, handler: Callable[[], None]) -> None:
        """Call ``handler()`` whenever ``point`` is reached (an exception it raises
        propagates there, as an injected fault)."""
        with self._guard:
            self._handlers.setdefault(point, []).append(handler)

    def clear(self) -> None:
        """Forget every handler."""
        with self._guard:
            self._handlers.clear()

    def reached(self, point: Point) -> None:
        """Run the handlers of ``point``, if any."""
        handlers = self._handlers.get(point)
        if handlers:
            for handler in list(handlers):
                handler()
