"""Retention: which restore points a policy keeps, and pruning the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from blockferry.repository import Repository, RestorePoint
from blockferry.repository.restore_point import RestorePointDisk
from blockferry.repository.retention import Policy, kept

START = datetime(2026, 11, 2, 22, 30, tzinfo=UTC)  # a Monday


def point(n: int, at: datetime, disks: tuple[str, ...] = ("vm.sda",)) -> RestorePoint:
    return RestorePoint(
        id=f"{at:%Y%m%dT%H%M%SZ}-{n:08x}",
        job="j",
        created=at,
        parent=None,
        session_id=f"s{n}",
        disks=tuple(RestorePointDisk(d, 1, f"{d}.fidx", 0) for d in disks),
    )


def twice_a_day(days: int) -> list[RestorePoint]:
    """Two restore points a day (at 22:30 and 23:30 UTC), oldest first."""
    return [
        point(2 * d + i, START + timedelta(days=d, hours=i)) for d in range(days) for i in (0, 1)
    ]


def test_keep_last_and_daily() -> None:
    points = twice_a_day(5)
    assert set(kept(points, Policy(keep_last=3))) == {p.id for p in points[-3:]}
    daily = kept(points, Policy(daily=3))
    assert set(daily) == {points[9].id, points[7].id, points[5].id}, "the newest of each day"
    assert daily[points[9].id] == ["daily", "newest of vm.sda"]


def test_days_begin_in_the_policys_time_zone() -> None:
    points = twice_a_day(2)  # 23:30 and 00:30 in Berlin: the second is the next day
    berlin = kept(points, Policy(daily=10, timezone="Europe/Berlin"))
    assert set(berlin) == {points[0].id, points[2].id, points[3].id}
    utc = kept(points, Policy(daily=10))
    assert set(utc) == {points[1].id, points[3].id}


def test_weekly_monthly_yearly() -> None:
    # ten Mondays: November 2, 2026 to January 4, 2027
    points = [point(i, START + timedelta(days=7 * i)) for i in range(10)]
    assert set(kept(points, Policy(weekly=4))) == {p.id for p in points[-4:]}
    monthly = kept(points, Policy(monthly=2))
    assert set(monthly) == {points[9].id, points[8].id}, "newest of January and of December"
    assert set(kept(points, Policy(yearly=5))) == {points[-1].id, points[8].id}


def test_the_newest_restore_point_of_every_disk_stays() -> None:
    old = point(1, START, ("vm.sda", "vm.sdb"))  # the only one with sdb
    newer = [point(n, START + timedelta(days=n)) for n in range(2, 5)]
    keep = kept([old, *newer], Policy(keep_last=1))
    assert set(keep) == {old.id, newer[-1].id}
    assert keep[old.id] == ["newest of vm.sdb"]


def test_prune_removes_what_is_not_kept_and_a_dry_run_nothing(repo: Repository) -> None:
    for n in range(4):
        repo.stage_fixed_index(f"s{n}", "vm.sda", 0, [])
        repo.commit_restore_point(
            job="j", session_id=f"s{n}", disks=["vm.sda"], parent=None, stats={}
        )
    points = repo.restore_points("j")
    dry = repo.prune("j", Policy(keep_last=1), dry_run=True)
    assert dry.removed == [p.id for p in points[:3]]
    assert repo.restore_points("j") == points
    done = repo.prune("j", Policy(keep_last=1))
    assert done.removed == dry.removed
    assert repo.restore_points("j") == points[3:]
    assert repo.storage.leftovers() == []
