"""How the CLI prints: whole values when piped."""

from __future__ import annotations

import pytest
from rich.table import Table

from blockferry.cli.output import show_table


def test_a_piped_table_keeps_every_value_whole(capsys: pytest.CaptureFixture[str]) -> None:
    table = Table("restore point", "job")
    long = "20261204T095616Z-a9ce405f/" + "disk-" * 40
    table.add_row(long, "vm")
    show_table(table)
    out = capsys.readouterr().out
    assert long in out, "neither wrapped nor cut"
    assert "…" not in out
