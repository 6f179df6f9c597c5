"""Named points inside the repository's multi-step work, where tests pause a thread or
inject a fault into the real code.

Production code only calls :meth:`Hooks.reached`, at the repository's failpoints (the
process's own failpoints are checked there too); with no handler registered and the
process not armed that is one dictionary look-up. A test registers handlers with
:meth:`Hooks.on` on a real ``Repository`` (``repo.hooks``) and so can stop garbage
collection in the middle of its scan, or a commit before it writes its marker, while
another thread works on the same objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from blockferry import failpoints
from blockferry.failpoints import Point


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
        """Check the process's failpoint, then run the handlers of ``point``, if any."""
        failpoints.reached(point)
        handlers = self._handlers.get(point)
        if handlers:
            for handler in list(handlers):
                handler()
