"""Failpoints: an armed process SIGKILLs itself at the named hit and logs every point it
reached; an unknown point is refused by the settings."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from blockferry import failpoints
from blockferry.failpoints import Point
from blockferry.settings import CommonSettings

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from blockferry import failpoints
    from blockferry.failpoints import Point

    failpoints.arm(sys.argv[2:], Path(sys.argv[1]))
    for _ in range(3):
        failpoints.reached(Point.PACK_PUBLISHED)
        failpoints.reached(Point.PACK_SEALED)
    print("survived", flush=True)
    """
)


def run_child(log: Path, *specs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(log), *specs],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_armed_process_is_killed_at_the_named_hit_and_logs_what_it_reached(
    tmp_path: Path,
) -> None:
    log = tmp_path / "hits"
    result = run_child(log, "pack.sealed@2")
    assert result.returncode == -signal.SIGKILL
    assert "survived" not in result.stdout
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        "pack.published",
        "pack.sealed",
        "pack.published",
        "pack.sealed",
    ]
    assert lines[-1].endswith(" 2 kill")
    assert not any(line.endswith("kill") for line in lines[:-1])


def test_a_process_armed_elsewhere_runs_through_and_logs_every_hit(tmp_path: Path) -> None:
    log = tmp_path / "hits"
    result = run_child(log, "commit.done")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "survived"
    assert len(log.read_text().splitlines()) == 6


def test_unknown_points_and_hits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown failpoint 'pack\.nowhere'"):
        failpoints.parse(["pack.nowhere"])
    with pytest.raises(ValueError, match="counts from 1"):
        failpoints.parse(["pack.sealed@0"])
    assert failpoints.parse(["gc.done", "pack.sealed@3"]) == {
        Point.GC_DONE: 1,
        Point.PACK_SEALED: 3,
    }
    with pytest.raises(ValidationError, match="unknown failpoint"):
        CommonSettings(failpoints=["pack.nowhere"])
