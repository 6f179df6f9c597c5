"""Which restore points of a job a retention policy keeps.

``keep_last`` keeps the newest N. Each of ``daily``, ``weekly`` (ISO weeks),
``monthly`` and ``yearly`` keeps the newest restore point of each of its last N
periods that have one (periods without a restore point do not count), read in the
policy's time zone. A restore point kept by any rule stays. Whatever the rules say,
the newest restore point of every disk stays, so a disk never loses its last good one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from blockferry.repository.restore_point import RestorePoint

PERIODS: dict[str, Callable[[datetime], Hashable]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    timezone: str = "UTC"


def kept(points: Sequence[RestorePoint], policy: Policy) -> dict[str, list[str]]:
    """The restore points of one job that ``policy`` keeps, each with why; the others go."""
    newest_first = sorted(points, key=lambda p: (p.created, p.id), reverse=True)
    zone = ZoneInfo(policy.timezone)
    reasons: dict[str, list[str]] = {}

    def keep(point: RestorePoint, why: str) -> None:
        reasons.setdefault(point.id, []).append(why)

    for point in newest_first[: policy.keep_last]:
        keep(point, "last")
    for rule, period_of in PERIODS.items():
        count: int = getattr(policy, rule)
        seen: list[Hashable] = []
        for point in newest_first:
            period = period_of(point.created.astimezone(zone))
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            keep(point, rule)
    disks_seen: set[str] = set()
    for point in newest_first:
        for disk in point.disk_names:
            if disk not in disks_seen:
                disks_seen.add(disk)
                keep(point, f"newest of {disk}")
    return reasons
