"""Sizes and rates for people."""

from __future__ import annotations

from blockferry.core.units import rate, size


def test_sizes_are_in_binary_units_with_one_decimal() -> None:
    assert size(300 * 2**20) == "300.0 MiB"
    assert size(5243283) == "5.0 MiB"
    assert size(3 * 2**40 + 2**39) == "3.5 TiB"
    assert size(512) == "512 Bytes"


def test_a_rate_is_a_size_a_second() -> None:
    assert rate(300 * 2**20, 2.0) == "150.0 MiB/s"
    assert rate(10, 0) == "-"
