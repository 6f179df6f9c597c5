"""A TCP relay the tests control: it forwards 127.0.0.1:<port> to a server, counts the
bytes it carries each way, can limit its bandwidth, and can be cut (every connection
closed, new ones refused) and restored, to make a server unreachable for a while
without stopping it: a WAN link between two sites, or the way to a store."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from tests.system import free_port


class Throttle:
    """A bandwidth limit for one direction, shared by every connection: ``take(n)``
    returns once ``n`` more bytes fit under ``bytes_per_s`` (None: no limit)."""

    def __init__(self) -> None:
        self.bytes_per_s: float | None = None
        self._lock = threading.Lock()
        self._free_at = 0.0

    def take(self, count: int) -> None:
        rate = self.bytes_per_s
        if rate is None:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + count / rate
        if start > now:
            time.sleep(start - now)


class TcpRelay:
    def __init__(
        self, target_host: str, target_port: int, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        """Forwards ``host``:``port`` (default: a free port on loopback) to the target."""
        self._target = (target_host, target_port)
        self.host = host
        self.port = port or free_port()
        self.carried = {"to_server": 0, "to_client": 0}
        """Bytes forwarded each way since the relay started."""
        self._throttles = {"to_server": Throttle(), "to_client": Throttle()}
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listen()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def total(self) -> int:
        """Bytes carried both ways so far."""
        with self._lock:
            return sum(self.carried.values())

    def limit(self, bytes_per_s: float | None) -> None:
        """Carry at most ``bytes_per_s`` each way (None: as fast as it can)."""
        for throttle in self._throttles.values():
            throttle.bytes_per_s = bytes_per_s

    def cut(self) -> None:
        """Close every connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._listen()

    def close(self) -> None:
        self._stopped.set()
        self.cut()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._connections.update((client, server))
            for source, sink, way in ((client, server, "to_server"), (server, client, "to_client")):
                threading.Thread(target=self._pump, args=(source, sink, way), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, way: str) -> None:
        throttle = self._throttles[way]
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                throttle.take(len(data))
                sink.sendall(data)
                with self._lock:
                    self.carried[way] += len(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relay_to(host: str, port: int) -> Iterator[TcpRelay]:
    relay = TcpRelay(host, port)
    try:
        yield relay
    finally:
        relay.close()
