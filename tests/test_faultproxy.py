"""The fault proxy against a tiny echo server."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.harness.faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(30)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                sock.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def connect(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    s.settimeout(0.5)
    return s


def roundtrip(s: socket.socket, data: bytes = b"hello") -> bytes:
    s.sendall(data)
    return s.recv(100)


def test_modes(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo) as proxy:
        a = connect(proxy)
        assert roundtrip(a) == b"hello"

        proxy.set_mode("blackhole")
        with pytest.raises(TimeoutError):
            roundtrip(a)  # open, accepted, silent
        b = connect(proxy)  # new connections are accepted too
        with pytest.raises(TimeoutError):
            roundtrip(b)

        proxy.set_mode("pass")
        with pytest.raises(TimeoutError):
            roundtrip(a)  # lost bytes: stays dead
        c = connect(proxy)
        assert roundtrip(c) == b"hello"

        proxy.set_mode("reset")
        with pytest.raises(ConnectionResetError):
            roundtrip(c)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            # reset on connect or on first use, depending on timing
            d = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
            time.sleep(0.1)
            roundtrip(d)

        proxy.set_mode("pass")
        e = connect(proxy)
        assert roundtrip(e, b"again") == b"again"
        for s in (a, b, c, e):
            s.close()
    with FaultProxy(*echo) as proxy, pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("cut")  # type: ignore[arg-type]


def test_close_drops_connections(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(*echo)
    s = connect(proxy)
    assert roundtrip(s) == b"hello"
    proxy.close()
    proxy.close()
    s.settimeout(2)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        roundtrip(s)
    s.close()
