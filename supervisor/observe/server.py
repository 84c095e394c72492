"""Bounded HTTP/1.0 serving in threads: what a hostile or broken client can cost.

Contract: one request per connection (HTTP/1.0, closed after the answer), handled in
a daemon thread of its own, at most `Limits.max_connections` at a time. Whatever a
client does, a connection holds a thread for at most `request_timeout` (the request
line and headers must have arrived by then, however slowly they trickle in) plus
`write_timeout` (the answer must have been taken by then). Beyond the limits:

- a request line over `max_request_line` bytes: 414, closed;
- headers over `max_header_bytes` in all (or over 100 lines): 431, closed;
- a body (`Content-Length` other than 0, or `Transfer-Encoding`): 413, never read;
- a connection over `max_connections`: 503 with `Retry-After: 1`, written from the
  accepting thread without blocking (best effort), closed; no thread is started;
- too slow: closed without an answer (logged at debug level).

The answer comes from `Route`, a callable of (path without query, the
`Authorization` header or None) to a `Reply`; it runs in the handler thread.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_log = logging.getLogger(__name__)

JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """One answer: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Route = Callable[[str, "str | None"], Reply]


@dataclass(frozen=True)
class Limits:
    """What one connection may cost (seconds, bytes, connections)."""

    request_timeout: float = 5.0  # the whole request line + headers, from accept
    write_timeout: float = 5.0  # the whole answer
    max_request_line: int = 4096
    max_header_bytes: int = 8192
    max_connections: int = 32


class _TooLarge(Exception):
    """The headers went over `Limits.max_header_bytes`."""


class _DeadlineReader:
    """A minimal binary reader over a socket for the request head: every `recv` waits at
    most until `deadline` (monotonic), and at most `budget` bytes are ever read.

    `readline()` raises TimeoutError past the deadline and `_TooLarge` once the budget
    is spent without the line ending."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        self._sock = sock
        self._deadline = deadline
        self._budget = budget
        self._buffer = b""

    def readline(self, size: int = -1) -> bytes:
        cap = size if size >= 0 else 1 << 30
        while b"\n" not in self._buffer and len(self._buffer) < cap:
            if self._budget <= 0:
                raise _TooLarge
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("request not complete in time")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(min(4096, self._budget))
            if not chunk:
                break
            self._budget -= len(chunk)
            self._buffer += chunk
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        end = min(end, cap)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def spend(self, budget: int) -> None:
        """From now on at most `budget` more bytes (counting what is buffered)."""
        self._budget = budget - len(self._buffer)

    def close(self) -> None:
        self._buffer = b""


class BoundedServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` with `Limits`; `host` may be IPv4 or IPv6."""

    daemon_threads = True  # a stuck client never holds up shutdown
    allow_reuse_address = True
    request_queue_size = 128  # a flood's SYNs wait in the backlog, not in threads

    def __init__(self, address: tuple[str, int], route: Route, limits: Limits) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.route = route
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Runs in the accepting thread: start a handler thread only when a slot is free."""
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("http connection from %s failed", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 18\r\n\r\n"
         b'{"error": "busy"}\n')


def _refuse_busy(sock: socket.socket) -> None:
    """Tell an over-limit client 503 without ever blocking the accepting thread."""
    try:
        sock.setblocking(False)
        sock.send(_BUSY)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    server: BoundedServer
    protocol_version = "HTTP/1.0"
    server_version = "corda-ha-supervisor"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        limits = self.server.limits
        self.rfile.close()  # the buffered reader: replaced by one that keeps the limits
        self._reader = _DeadlineReader(self.connection,
                                       time.monotonic() + limits.request_timeout,
                                       limits.max_request_line + 1)
        self.rfile = self._reader  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        """Read the head within the limits, then answer once (HTTP/1.0: then close)."""
        limits = self.server.limits
        self.close_connection = True
        self.command = self.request_version = self.requestline = ""  # for send_error
        try:
            self.raw_requestline = self._reader.readline(limits.max_request_line + 1)
            if len(self.raw_requestline) > limits.max_request_line:
                self._refuse(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                return
            self._reader.spend(limits.max_header_bytes)
            try:
                parsed = self.parse_request()  # reads the headers; answers 4xx itself
            except _TooLarge:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return
            if not parsed:
                return
            if self.command not in ("GET", "HEAD"):
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command})")
                return
            if self.headers.get("Transfer-Encoding") or \
                    self.headers.get("Content-Length", "0").strip() not in ("", "0"):
                self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                return
            self._answer(head=self.command == "HEAD")
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError included
            _log.debug("http client %s cut off: %s", self.client_address[0], exc)

    def _refuse(self, status: HTTPStatus) -> None:
        """Answer `status`, then discard what the client already sent (without waiting),
        so that closing the socket sends FIN rather than a reset that could lose the
        answer."""
        with contextlib.suppress(OSError):  # the client went away or would not read
            self.send_error(status)
            self.connection.setblocking(False)
            for _ in range(16):
                if not self.connection.recv(65536):
                    break

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        self._start_write()
        super().send_error(code, message, explain)

    def _start_write(self) -> None:
        """The answer gets `write_timeout` in all (sendall counts it from the start)."""
        self.connection.settimeout(self.server.limits.write_timeout)

    def _answer(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            reply = self.server.route(path, self.headers.get("Authorization"))
        except Exception:
            _log.exception("http handler failed for %s", path)
            reply = Reply(HTTPStatus.INTERNAL_SERVER_ERROR, JSON, b'{"error": "internal"}\n')
        self._start_write()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
        except OSError:
            pass  # client went away or would not read

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("http %s " + format, self.client_address[0], *args)
