"""Sizes and rates as people read them, in binary units: ``300.0 MiB``, ``112.4 MiB/s``."""

from __future__ import annotations

import humanize


def size(count: int) -> str:
    """``count`` bytes: ``300.0 MiB``."""
    return humanize.naturalsize(count, binary=True, format="%.1f")


def rate(count: int, seconds: float) -> str:
    """``count`` bytes in ``seconds``, a second: ``112.4 MiB/s``."""
    return f"{size(round(count / seconds))}/s" if seconds > 0 else "-"
