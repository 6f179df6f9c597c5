"""Holding a mover's reads or writes to a rate."""

from __future__ import annotations

import asyncio
import time


class Throttle:
    """Keeps reading at or below ``rate`` bytes a second (0: unlimited), so a backup can
    spare the production storage it reads from."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._taken = 0
        self._started = time.monotonic()

    async def take(self, size: int) -> None:
        if not self._rate:
            return
        self._taken += size
        ahead = self._taken / self._rate - (time.monotonic() - self._started)
        if ahead > 0:
            await asyncio.sleep(ahead)
