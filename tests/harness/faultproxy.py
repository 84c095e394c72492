"""A TCP proxy that injects network faults, for tests.

`FaultProxy(target_host, target_port)` listens on 127.0.0.1:`port` (a free port)
and forwards every connection to the target. It runs its own asyncio loop in a
daemon thread, so it works alongside sync and async tests alike.

Modes (`set_mode`, takes effect before it returns):

- `pass`: forward bytes both ways.
- `reset`: abort every open connection with a TCP RST, and reset new ones at
  once (a crashed peer, a firewall sending RSTs).
- `blackhole`: keep every connection open and accept new ones, but silently
  drop all bytes in both directions (a network partition behind a proxy or load
  balancer: the client's bytes are acknowledged, no answer ever comes, so
  neither keepalives nor `tcp_user_timeout` notice).

A connection that was blackholed has lost bytes, so it stays blackholed (its
stream is corrupt) until a peer closes it; switching back to `pass` only
affects new connections and connections that were never blackholed.

The `proxies` fixture (registered in tests/conftest.py) makes proxies in front of the
test database and closes them all after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pytest

if TYPE_CHECKING:
    from tests.harness.pgserver import PgServer

T = TypeVar("T")

Mode = Literal["pass", "reset", "blackhole"]
MODES: tuple[Mode, ...] = ("pass", "reset", "blackhole")


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and (in pass mode) its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = False
        self.tasks: set[asyncio.Task[None]] = set()

    def abort(self) -> None:
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)
        for t in self.tasks:
            t.cancel()


class FaultProxy:
    """See the module docstring. `close()` stops it and drops every connection."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1",
                 mode: Mode = "pass") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = listen_host
        self._mode: Mode = mode
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy",
                                        daemon=True)
        self._thread.start()
        self._closed = False
        self.port: int = self._call(self._start())

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def connection_count(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._links)

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; existing connections are reset/blackholed before this returns."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self._call(self._set_mode(mode))

    def close(self) -> None:
        """Stop listening, reset all connections, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loop side -------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode == "reset":
            for link in list(self._links):
                link.abort()
            self._links.clear()
        elif mode == "blackhole":
            for link in self._links:
                link.blackholed = True

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            _abort_with_rst(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            if self._mode == "blackhole":
                link.blackholed = True
                await self._pump(link, reader, None)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                _abort_with_rst(writer)
                return
            link.upstream = up_writer
            if link not in self._links:  # reset while connecting
                link.abort()
                return
            if link.blackholed:
                _abort_with_rst(up_writer)
                link.upstream = None
            t1 = asyncio.ensure_future(self._pump(link, reader, up_writer))
            t2 = asyncio.ensure_future(self._pump(link, up_reader, writer))
            link.tasks = {t1, t2}
            done, _ = await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            if link.blackholed and t1 not in done:
                # the server side closed, but a partition delivers no FIN: keep
                # swallowing the client's bytes until the client gives up
                await t1
            for w in (writer, up_writer):
                w.close()
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            for t in link.tasks:
                t.cancel()
            self._links.discard(link)
            if not writer.is_closing():
                writer.close()

    @staticmethod
    async def _pump(link: _Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter | None) -> None:
        """Copy reader -> writer until EOF; drop the bytes while blackholed."""
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if link.blackholed or writer is None:
                    continue
                writer.write(data)
                await writer.drain()


@pytest.fixture
def proxies(pg_server: PgServer) -> Iterator[Callable[[], FaultProxy]]:
    """Factory of FaultProxy instances in front of the database; all closed after the test."""
    made: list[FaultProxy] = []

    def make() -> FaultProxy:
        p = FaultProxy(pg_server.host, pg_server.port)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.close()
