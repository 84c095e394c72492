"""asyncio plumbing for the guard's pipes and for processes that are not ours to wait for.

`LineRelay` turns a byte stream into decoded lines (chunks of at most
MAX_LINE_BYTES); `GuardCommands` is the write side of the guard's stdin and only
records its loss; `wait_pid_gone` waits for any pid to exit (pidfd, else polling)
and `reap_child` reaps our own child, neither blocking the loop.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import subprocess
import time
from collections.abc import Callable

import psutil

log = logging.getLogger("supervisor.node")

#: Node output lines longer than this are relayed in chunks of this many bytes.
MAX_LINE_BYTES = 64 * 1024


class LineRelay(asyncio.Protocol):
    """Splits a byte stream into lines (chunks of at most MAX_LINE_BYTES) and decodes them."""

    def __init__(self, on_line: Callable[[str], None],
                 on_close: Callable[[], None] | None = None) -> None:
        self._on_line = on_line
        self._on_close = on_close
        self._buf = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _emit(self, raw: bytes, final: bool) -> None:
        text = self._decoder.decode(raw, final=final)
        if raw.endswith(b"\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
        try:
            self._on_line(text)
        except Exception:
            log.exception("output callback failed")

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n", 0, MAX_LINE_BYTES)
            if nl >= 0:
                raw = bytes(self._buf[:nl + 1])
                del self._buf[:nl + 1]
                self._emit(raw, final=True)
            elif len(self._buf) >= MAX_LINE_BYTES:
                raw = bytes(self._buf[:MAX_LINE_BYTES])
                del self._buf[:MAX_LINE_BYTES]
                self._emit(raw, final=False)  # the decoder carries a split character over
            else:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buf:
            self._emit(bytes(self._buf), final=True)
            self._buf.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close()


class GuardCommands(asyncio.Protocol):
    """The write side of the guard's stdin; loss (guard gone) is simply recorded."""

    def __init__(self) -> None:
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def wait_pid_gone(pid: int, timeout: float, *, pidfd: int | None = None) -> bool:
    """Wait (without blocking the loop) until `pid` has exited; True if it did in time.

    Works for processes that are not our children (a zombie counts as gone).
    """
    loop = asyncio.get_running_loop()
    own_fd = False
    if pidfd is None:
        try:
            pidfd = os.pidfd_open(pid)
            own_fd = True
        except ProcessLookupError:
            return True
        except OSError:
            pidfd = None
    if pidfd is not None:
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await asyncio.wait_for(done, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(pidfd)
            if own_fd:
                os.close(pidfd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.02)
    return False


async def reap_child(proc: subprocess.Popen[bytes]) -> int:
    """Wait for our child `proc` to exit and reap it, without blocking the loop."""
    while proc.poll() is None:
        await wait_pid_gone(proc.pid, 1.0)
    return proc.returncode
