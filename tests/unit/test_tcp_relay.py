"""The relay the WAN and outage tests measure with: it counts exactly the bytes it
carries each way, holds them to its bandwidth limit, and a cut refuses connections."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.tcp_relay import TcpRelay, relay_to


@pytest.fixture
def echo() -> Iterator[int]:
    """A server on loopback that sends back what it receives; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                while data := connection.recv(1 << 16):
                    connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def _exchange(relay: TcpRelay, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", relay.port)) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while data := connection.recv(1 << 16):
            received += data
    return received


def _until(check: object) -> None:
    deadline = time.monotonic() + 10
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_it_counts_each_way_exactly(echo: int) -> None:
    with relay_to("127.0.0.1", echo) as relay:
        payload = bytes(range(256)) * 4000
        assert _exchange(relay, payload) == payload
        _until(lambda: relay.total() == 2 * len(payload))
        assert relay.carried == {"to_server": len(payload), "to_client": len(payload)}


def test_a_bandwidth_limit_holds_the_transfer_back(echo: int) -> None:
    with relay_to("127.0.0.1", echo) as relay:
        relay.limit(400_000)
        began = time.monotonic()
        assert _exchange(relay, b"x" * 400_000) == b"x" * 400_000
        assert time.monotonic() - began >= 0.7, "400 kB at 400 kB/s: about a second"


def test_a_cut_refuses_connections_until_restored(echo: int) -> None:
    with relay_to("127.0.0.1", echo) as relay:
        relay.cut()
        with pytest.raises(OSError):
            _exchange(relay, b"hello")
        relay.restore()
        assert _exchange(relay, b"hello") == b"hello"
