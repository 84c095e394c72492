"""SystemdNotifier against a real AF_UNIX datagram socket posing as NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from supervisor.observe.sdnotify import SystemdNotifier

pytestmark = pytest.mark.timeout(10)


class Receiver:
    """The systemd end: a bound datagram socket and the NOTIFY_SOCKET value naming it."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536).decode()

    def assert_empty(self) -> None:
        self.sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            self.sock.recv(65536)


@pytest.fixture
def short_dir() -> Iterator[str]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, short_dir: str) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = os.path.join(short_dir, "notify")
        sock.bind(name)
    else:
        abstract = f"corda-ha-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + abstract.encode())
        name = "@" + abstract
    try:
        yield Receiver(sock, name)
    finally:
        sock.close()


def test_enabled_only_with_notify_socket(receiver: Receiver) -> None:
    assert SystemdNotifier({"NOTIFY_SOCKET": receiver.name}).enabled
    assert not SystemdNotifier({}).enabled


def test_ready_with_status_is_one_datagram(receiver: Receiver) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": receiver.name})
    n.ready("standby epoch=-")
    assert receiver.recv() == "READY=1\nSTATUS=standby epoch=-"
    receiver.assert_empty()


def test_all_helpers(receiver: Receiver) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": receiver.name})
    n.ready()
    assert receiver.recv() == "READY=1"
    n.status("active epoch=7 node pid 1234")
    assert receiver.recv() == "STATUS=active epoch=7 node pid 1234"
    n.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    n.stopping("stopping: releasing lease")
    assert receiver.recv() == "STOPPING=1\nSTATUS=stopping: releasing lease"
    n.stopping()
    assert receiver.recv() == "STOPPING=1"
    n.notify("FOO=1", "BAR=2")
    assert receiver.recv() == "FOO=1\nBAR=2"


def test_status_newlines_do_not_inject_assignments(receiver: Receiver) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": receiver.name})
    n.status("line one\nREADY=1")
    assert receiver.recv() == "STATUS=line one READY=1"


def test_disabled_is_a_silent_noop() -> None:
    n = SystemdNotifier({})
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.stopping()
    assert n.watchdog_interval() is None


def test_never_raises_when_socket_is_missing(short_dir: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="supervisor.observe.sdnotify")
    n = SystemdNotifier({"NOTIFY_SOCKET": os.path.join(short_dir, "absent")})
    for _ in range(3):
        n.ready("x")
        n.watchdog()
    failures = [r for r in caplog.records if r.name == "supervisor.observe.sdnotify"]
    assert len(failures) == 1  # logged once, at debug
    assert failures[0].levelno == logging.DEBUG


@pytest.mark.parametrize("name", ["vsock:2:1234", "@", "relative/path"])
def test_never_raises_on_unsupported_address(name: str) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert n.enabled
    n.ready("x")  # no exception


def test_never_blocks_when_receiver_queue_is_full(receiver: Receiver) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": receiver.name})
    start = time.monotonic()
    for _ in range(5000):  # nobody reads: the queue fills, sends fail with EAGAIN
        n.status("x" * 200)
    assert time.monotonic() - start < 5.0
    assert receiver.recv().startswith("STATUS=")


def fill(receiver: Receiver) -> int:
    """Send datagrams nobody reads until the receiver's queue refuses more."""
    address: str | bytes = receiver.name
    if receiver.name.startswith("@"):
        address = b"\0" + receiver.name[1:].encode()
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while True:
            try:
                sock.sendto(b"STATUS=filler", address)
            except BlockingIOError:
                return sent
            sent += 1
            assert sent < 1_000_000


def test_notify_returns_at_once_when_the_receiver_queue_is_full(receiver: Receiver) -> None:
    """systemd stalled (nobody reads NOTIFY_SOCKET, its queue is full): each notify()
    still returns at once, so the watchdog ping on the loop cannot block it."""
    queued = fill(receiver)
    assert queued > 0
    n = SystemdNotifier({"NOTIFY_SOCKET": receiver.name})
    worst: list[float] = []

    def calls() -> None:
        for _ in range(20):
            start = time.monotonic()
            n.watchdog()
            n.status("active epoch=7")
            worst.append(time.monotonic() - start)

    t = threading.Thread(target=calls, daemon=True)
    t.start()
    t.join(3.0)
    assert not t.is_alive(), "notify() blocked on a full notification socket"
    print(f"{queued} datagrams queued; slowest pair of notify() calls {max(worst) * 1e3:.2f} ms")
    assert max(worst) < 0.5
    assert receiver.recv() == "STATUS=filler"  # the queue was full of our filler, not lost


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier(env).watchdog_interval() == 15.0


def test_watchdog_pid_is_honoured() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier(env).watchdog_interval() == 15.0
    env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert SystemdNotifier(env).watchdog_interval() is None
    assert SystemdNotifier(env, pid=os.getpid() + 1).watchdog_interval() == 15.0


@pytest.mark.parametrize("usec", ["", "0", "-5", "abc"])
def test_watchdog_interval_off(usec: str) -> None:
    assert SystemdNotifier({"WATCHDOG_USEC": usec}).watchdog_interval() is None


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.name)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = SystemdNotifier()
    assert n.enabled
    assert n.watchdog_interval() == 1.0
    n.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
