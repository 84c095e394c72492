"""sd_notify(3) for `Type=notify` services, in pure Python.

Contract: nothing here ever raises or blocks. When `NOTIFY_SOCKET` is unset
(not started by systemd) every call is a cheap no-op. Send errors (socket gone,
receive queue full, unsupported address) are swallowed; the first one is logged
at debug level, later ones are silent.

The daemon sends `READY=1` once the loop runs, `STATUS=` on every state change
(state and epoch), `WATCHDOG=1` at least every `watchdog_interval()` seconds
from the loop itself (so a hung loop is noticed), and `STOPPING=1` on shutdown.
Children must not inherit `NOTIFY_SOCKET` (`NotifyAccess=main` would reject
them anyway); the node launcher removes it from the node's environment.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

_log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends notification datagrams to the socket named by `NOTIFY_SOCKET`.

    `environ` is read once, at construction (default: `os.environ`); `pid` is
    this process's id for the `WATCHDOG_PID` check (default: `os.getpid()`).
    Thread-safe: each `notify()` is one `sendto()` on a fresh non-blocking socket.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._socket_name = env.get("NOTIFY_SOCKET", "")
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._pid = os.getpid() if pid is None else pid
        self._error_logged = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return bool(self._socket_name)

    def _address(self) -> str | bytes | None:
        name = self._socket_name
        if name.startswith("/"):
            return name
        if name.startswith("@") and len(name) > 1:
            # Linux abstract namespace: leading NUL, no terminator.
            return b"\0" + name[1:].encode()
        return None  # e.g. "vsock:..." is not supported here

    def notify(self, *lines: str) -> None:
        """Send `lines` as one datagram ("READY=1\\nSTATUS=..."). Never raises, never blocks."""
        if not self._socket_name or not lines:
            return
        try:
            address = self._address()
            if address is None:
                raise OSError(f"unsupported NOTIFY_SOCKET address {self._socket_name!r}")
            payload = "\n".join(lines).encode("utf-8", "replace")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, address)
        except Exception as exc:  # never let a notification hurt the loop
            with self._lock:
                first = not self._error_logged
                self._error_logged = True
            if first:
                _log.debug("sd_notify to %r failed (further failures not logged): %s",
                           self._socket_name, exc)

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def _status_line(text: str) -> str:
        # A newline would start a new assignment in the datagram.
        return "STATUS=" + " ".join(text.splitlines())

    def ready(self, status: str | None = None) -> None:
        """`READY=1` (plus `STATUS=` when given): startup is complete."""
        if status is None:
            self.notify("READY=1")
        else:
            self.notify("READY=1", self._status_line(status))

    def status(self, text: str) -> None:
        """`STATUS=text`: free-form, shown by `systemctl status` (newlines become spaces)."""
        self.notify(self._status_line(text))

    def stopping(self, status: str | None = None) -> None:
        """`STOPPING=1` (plus `STATUS=` when given): shutdown has begun."""
        if status is None:
            self.notify("STOPPING=1")
        else:
            self.notify("STOPPING=1", self._status_line(status))

    def watchdog(self) -> None:
        """`WATCHDOG=1`: keep-alive; send it from the loop, not from a helper thread."""
        self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between `WATCHDOG=1` pings: half of `WATCHDOG_USEC`.

        None when the watchdog is off: `WATCHDOG_USEC` unset, zero or invalid,
        or `WATCHDOG_PID` names another process (the variables were inherited).
        """
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != self._pid:
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2_000_000
