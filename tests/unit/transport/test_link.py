"""The link to another site, from MirrorMaker 2's heartbeats: their keys name the site
they come from."""

from __future__ import annotations

import struct

from blockferry.transport.link import source_site


def _heartbeat_key(source: str, target: str) -> bytes:
    """As MirrorMaker 2 writes it: the two aliases, each an int16 length and UTF-8."""
    key = b""
    for alias in (source, target):
        key += struct.pack(">h", len(alias)) + alias.encode()
    return key


def test_a_heartbeat_names_the_site_it_comes_from() -> None:
    assert source_site(_heartbeat_key("offsite", "onsite")) == "offsite"
    assert source_site(b"\x00\x07offsite\x00\x06onsite") == "offsite"  # one of Kafka 4.1's


def test_anything_else_is_no_heartbeat() -> None:
    assert source_site(b"") is None
    assert source_site(b"\x00\x07offsite") is None  # no target
    assert source_site(b"\x00\x07offsite\x00\x06onsite!") is None  # trailing bytes
    assert source_site(b"\xff\xff") is None  # a negative length
    assert source_site(b"\x00\x02\xff\xfe\x00\x00") is None  # not UTF-8
