"""The soak's table and its last line."""

from __future__ import annotations

from blockferry.failpoints import Point
from tests.soak.matrix import Tally

COLUMNS = (
    ("fault", 42),
    ("hit", 4),
    ("runs", 5),
    ("sessions ok", 12),
    ("resumed", 8),
    ("failed cleanly", 15),
    ("restore points verified", 24),
    ("lost", 5),
    ("corrupt", 8),
    ("stuck", 6),
)


def print_report(tallies: dict[str, Tally], runs: int, points: list[Point]) -> int:
    """Print the table, the problems and the summary; 0 if the soak passed, else 1."""
    print("  ".join(name.ljust(width) for name, width in COLUMNS))
    total = Tally()
    for fault, tally in tallies.items():
        values = (
            fault,
            tally.hit,
            tally.runs,
            tally.sessions_ok,
            tally.resumed,
            tally.failed_cleanly,
            tally.verified,
            tally.lost,
            tally.corrupt,
            tally.stuck,
        )
        print("  ".join(str(v).ljust(width) for v, (_, width) in zip(values, COLUMNS, strict=True)))
        total.add(tally)
    never_hit = [
        point.value
        for point in points
        if not any(
            tally.hit for fault, tally in tallies.items() if fault.startswith(f"{point.value} [")
        )
    ]
    for problem in total.problems:
        print(f"problem: {problem}")
    if never_hit:
        print(f"never hit: {', '.join(never_hit)}")
    sessions = total.sessions_ok + total.failed_cleanly + total.stuck
    print(
        f"soak: {runs} runs, {sessions} sessions, lost {total.lost},"
        f" corrupt {total.corrupt}, stuck {total.stuck}"
    )
    return 1 if total.problems or never_hit or total.lost or total.corrupt or total.stuck else 0
