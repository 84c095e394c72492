"""The daemon end to end: systemd notify, logs, lease off, restart on the same host,
a shared machineName, a node failing at start. Real PostgreSQL, real processes.

U = 0.5 s, W = 2 s, stopTimeout = 0.5 s (tests/harness/host.py).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.harness.bounds import kill_within, wait_within, within
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, add_edited
from tests.harness.config import supervisor_config
from tests.harness.host import W, http_get, lease_off, log_seconds
from tests.harness.loadprobe import LoadWatch
from tests.harness.pgserver import PgServer
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(90)



def live_node(host: Any, timeout: float = 3.0) -> int:
    """The pid of the host's single live node (waits for its record)."""
    wait_until(lambda: len(host.live_nodes()) == 1, timeout, message=f"{host.name}: one live node")
    (pid,) = host.live_nodes()
    return int(pid)


# --------------------------------------------------------------------------- systemd notify


class NotifySocket:
    """A bound AF_UNIX datagram socket posing as systemd's NOTIFY_SOCKET."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # learn sender pids
        self.sock.bind(path)
        self.senders: set[int] = set()
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []  # (monotonic time, one assignment)
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    65536, socket.CMSG_SPACE(struct.calcsize("iII")))
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self.cond:
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        self.senders.add(struct.unpack("iII", payload[:12])[0])
                for line in data.decode().split("\n"):
                    self.messages.append((now, line))
                self.cond.notify_all()

    def wait(self, predicate: Any, timeout: float, what: str) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if predicate(m[1]):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s; got {self.messages[-20:]}")
                self.cond.wait(left)

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        with self.cond:
            return [m for m in self.messages if m[1].startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = str(tmp_path / "notify.sock")
    short_dir = None
    if len(path.encode()) >= 100:  # sun_path is 108 bytes
        short_dir = tempfile.mkdtemp(prefix="cha-notify-")
        path = os.path.join(short_dir, "n.sock")
    ns = NotifySocket(path)
    try:
        yield ns
    finally:
        ns.close()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


def test_systemd_notify(pair: Cluster, notify_socket: NotifySocket,
                        monkeypatch: pytest.MonkeyPatch, load: LoadWatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    watchdog_usec = 400_000
    a = pair.add("a", env={"NOTIFY_SOCKET": notify_socket.path,
                           "WATCHDOG_USEC": str(watchdog_usec)})
    t0 = time.monotonic()
    a.start()
    ready_at, _ = notify_socket.wait(lambda m: m == "READY=1", 15, "READY=1")
    active_at, active = notify_socket.wait(
        lambda m: m.startswith("STATUS=") and "state=active" in m, 15, "STATUS=state=active")
    epoch = a.wait_event("lease_acquired", 5)["epoch"]
    assert f"epoch={epoch}" in active.split()
    # observe the watchdog for 1.5 s of steady activity (a measurement window)
    window_start = time.monotonic()
    time.sleep(1.5)
    window_end = time.monotonic()
    pings = [t for t, m in notify_socket.lines("WATCHDOG=1") if window_start <= t <= window_end]
    all_pings = [t for t, _ in notify_socket.lines("WATCHDOG=1") if t >= ready_at]
    gaps = [b - a_ for a_, b in itertools.pairwise(all_pings)]
    max_gap = max(gaps) if gaps else float("inf")
    statuses = [m for _, m in notify_socket.lines("STATUS=")]
    print(f"notify: READY after {ready_at - t0:.3f}s, active after {active_at - t0:.3f}s; "
          f"{len(pings)} WATCHDOG=1 in 1.5s, max gap {max_gap:.3f}s "
          f"(WATCHDOG_USEC={watchdog_usec / 1e6}s); STATUS lines: {statuses}")
    node_pid = live_node(a)
    rec = a.node_record(node_pid)
    assert rec["notify_socket"] is None, "the node must not inherit NOTIFY_SOCKET"

    stop_from = time.monotonic()
    a.signal(signal.SIGTERM)
    stopping_at, _ = notify_socket.wait(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
    assert stopping_at >= stop_from
    assert a.exit_code(10) == 0
    assert not pid_alive(node_pid)
    assert all(t >= stop_from for t, _ in notify_socket.lines("STOPPING=1"))
    # only the supervisor itself talks to systemd (NotifyAccess=main), not the guard or node
    assert notify_socket.senders == {a.proc.pid}  # type: ignore[union-attr]
    # WATCHDOG=1 repeatedly: every WATCHDOG_USEC/2 = 0.2 s, so at least 3 in 1.5 s, and never
    # a gap of WATCHDOG_USEC (systemd would then SIGABRT the service)
    assert len(pings) >= 3, f"watchdog gaps {[round(g, 3) for g in gaps]}"
    # a ping every WATCHDOG_USEC / 2, each a timer's wake-up: late by at most the worst
    # scheduling delay measured meanwhile (production's WatchdogSec=30 leaves 15 s)
    bound = kill_within(watchdog_usec / 2e6, load)
    assert max_gap < bound, f"watchdog gaps {[round(g, 3) for g in gaps]}, bound {bound:.3f}"


# --------------------------------------------------------------------------- logs


def password_dsn(pg_server: PgServer) -> str:
    """The test server's conninfo without a user (the config supplies user and password)."""
    params = conninfo_to_dict(pg_server.dsn)
    params.pop("user", None)
    params.pop("password", None)
    return make_conninfo("", **params)


def test_logs_events_and_no_password(pair: Cluster, pg_server: PgServer) -> None:
    secret = PgServer.password
    schema = f"pw_{uuid.uuid4().hex[:12]}"  # PostgreSQL 15+: the role cannot create in public
    a = pair.add("a", dsn=password_dsn(pg_server), extra_conf=supervisor_config(
        database={"user": PgServer.password_user, "password": secret, "schema": schema}))
    a.start()
    acquired = a.wait_event("lease_acquired", 15)
    started = a.wait_event("node_started", 5)
    node_pid = live_node(a)
    assert isinstance(acquired["epoch"], int) and acquired["epoch"] >= 1
    assert started["pid"] == node_pid and started["epoch"] == acquired["epoch"]
    a.wait_event("state_changed", 1, match=lambda e: e["from"] == "standby" and e["to"] == "active"
                 and e["epoch"] == acquired["epoch"])
    out = a.wait_event("node_output", 5, match=lambda e: e["line"].startswith(
        f"node started pid={node_pid} epoch={acquired['epoch']}"))
    assert out["stream"] == "stdout"
    err = a.wait_event("node_output", 5, match=lambda e: e["line"] == f"node stderr pid={node_pid}")
    assert err["stream"] == "stderr"

    mark = a.mark()
    os.kill(node_pid, signal.SIGKILL)
    exited = a.wait_event("node_exited", 5, since=mark)
    print(f"node_exited after SIGKILL: {exited}")
    assert exited["pid"] == node_pid
    assert exited["signal"] == 9 and exited["exit_code"] is None
    assert isinstance(exited["runtime"], float) and exited["runtime"] > 0
    assert exited["expected"] is False
    a.wait_event("node_restart_scheduled", 2, since=mark)
    a.wait_event("node_started", 5, since=mark)
    new_pid = live_node(a)

    # the HTTP endpoint and check-config do not show the password either
    port = a.health_port()
    bodies = [http_get(port, p)[1].decode() for p in ("/status", "/metrics", "/health")]
    r = run_cli("check-config", "--config", str(a.config_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["database"]["password"] == "***"

    a.signal(signal.SIGTERM)
    assert a.exit_code(10) == 0
    assert not pid_alive(new_pid)
    a.wait_event("lease_released", 1, since=mark)
    a.wait_event("supervisor_exiting", 1, since=mark)

    with a.cond:
        raw = list(a.raw)
    assert raw, "no output at all"
    for line in raw:
        assert secret not in line, f"password in the log: {line!r}"
        event = json.loads(line)  # every line is JSON (format = json, stdout not a tty)
        assert {"event", "level", "timestamp", "logger"} <= event.keys(), line
    for text in [*bodies, r.stdout, r.stderr]:
        assert secret not in text
    names = [e["event"] for e in a.lines]
    print(f"{len(raw)} log lines; events: {sorted(set(names))}")


# --------------------------------------------------------------------------- on = false


def test_lease_off_plain_supervision(pair: Cluster, pg_server: PgServer) -> None:
    a = add_edited(pair, "a", lease_off)
    a.start()
    a.wait_node_up(15)
    node_pid = live_node(a)
    rec = a.node_record(node_pid)
    assert rec["epoch"] is None, "CORDA_HA_EPOCH must be unset without a lease"
    assert rec["machine_name"] == "a"
    code, body = http_get(a.health_port(), "/status")
    status = json.loads(body)
    assert code == 200 and status["state"] == "disabled" and status["lease_enabled"] is False
    assert http_get(a.health_port(), "/health")[0] == 200

    mark = a.mark()
    t0 = time.monotonic()
    os.kill(node_pid, signal.SIGKILL)
    a.wait_event("node_exited", 5, since=mark, match=lambda e: e["signal"] == 9)
    sched = a.wait_event("node_restart_scheduled", 2, since=mark)
    assert sched["delay"] == pytest.approx(0.2)
    a.wait_event("node_started", 5, since=mark)
    wait_until(lambda: a.live_nodes() and a.live_nodes() != [node_pid], 3,
               message="a new node")
    restarted_after = time.monotonic() - t0
    new_pid = live_node(a)
    assert new_pid != node_pid
    a.node_record(new_pid)  # it is up (wrote its record) before we stop it

    a.signal(signal.SIGTERM)
    assert a.exit_code(10) == 0
    assert not pid_alive(new_pid)
    rec = a.node_record(new_pid)
    assert rec["stop"] is not None, "the node was stopped gracefully (SIGTERM)"
    for name in ("lease_acquired", "lease_released", "lease_seen", "lease_call_failed"):
        assert not a.events(name), name
    # nothing was written to the lease table
    exists = pg_server.execute("SELECT to_regclass('corda_ha_lease') IS NOT NULL")[0][0]
    if exists:
        rows = pg_server.execute("SELECT count(*) FROM corda_ha_lease WHERE lease_name = %s",
                                 [a.lease_name])
        assert rows[0][0] == 0
    print(f"lease off: crash to restart {restarted_after:.3f}s (backoff 0.2s)")


# --------------------------------------------------------------------------- restart


def test_restarted_supervisor_takes_its_lease_back_at_once(pair: Cluster,
                                                           load: LoadWatch) -> None:
    first = pair.add("a")
    with Watcher([first]) as watch:  # a second Host "a" shares this records directory
        first.start()
        epoch = first.wait_event("lease_acquired", 15)["epoch"]
        first.wait_event("node_started", 5)
        old_node = live_node(first)
        killed_at = time.monotonic()
        first.signal(signal.SIGKILL)
        assert first.exit_code(5) == -signal.SIGKILL
        node_gone = wait_within(lambda: not pid_alive(old_node), 0.0, load, floor=1.5,
                                spawns=0, what="old node killed by its guard",
                                since=killed_at)

        second = pair.add("a")  # same name, root, config file and machineName
        assert second.config_path == first.config_path
        t0 = time.monotonic()
        second.start()
        # waits from the launch include the interpreter start: bounded loosely here, and
        # exactly below from the new supervisor's own start (in_process)
        take = second.wait_event("lease_takeover_from_dead_predecessor", 15)
        assert take["pid"] == first.proc.pid  # type: ignore[union-attr]
        acquired = second.wait_event("lease_acquired", 5)
        acquired_after = time.monotonic() - t0
        assert acquired["epoch"] == epoch + 1
        started = second.wait_event("supervisor_started", 1)
        in_process = log_seconds(acquired) - log_seconds(started)
        new_node = live_node(second)
        node_after = time.monotonic() - t0
        assert new_node != old_node
    watch.assert_never_two()
    print(f"restart on the same host: old node gone {node_gone:.3f}s after SIGKILL; "
          f"new supervisor had the lease {acquired_after:.3f}s after launch "
          f"({in_process:.3f}s after supervisor_started), node running after {node_after:.3f}s; "
          f"W = {W}s")
    # no wait of W: the predecessor is known dead (the bound grows with the load, but
    # stays below W, or the test could not tell)
    assert in_process < min(within(0.0, load, spawns=0, floor=W / 2), 0.9 * W)


# --------------------------------------------------------------------------- machineName


def test_same_machine_name_twice_never_two_nodes(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", machine_name="same")
        b = pair.add("b", machine_name="same")
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "same")
        time.sleep(3 * W)  # an observation window: nothing may change
        assert pair.active(1) is a
        assert b.live_nodes() == []
        assert b.state() in (None, "standby")
        assert not b.events("lease_acquired")
        assert not b.events("lease_takeover_from_dead_predecessor")
        assert len(a.events("node_started")) == 1
        # b never made a's renewals fail (a slow answer on a loaded machine, retried on
        # fresh connections, is not b's doing)
        refused = [e for e in a.events("lease_renewal_failed")
                   if not str(e.get("reason", "")).startswith("no answer within")]
        assert not refused and not a.events("lease_lost")
        code_a, _ = http_get(a.health_port(), "/health")
        code_b, _ = http_get(b.health_port(), "/health")
        assert (code_a, code_b) == (200, 503)

        # the holder's supervisor dies: the other one (same name, same host) may take
        # over at once, but only once a's node is gone (the Watcher checks that)
        (node_a,) = a.live_nodes()
        killed_at = time.monotonic()
        a.signal(signal.SIGKILL)
        takeover = wait_within(lambda: b.live_nodes(), W, load, floor=1.0,
                               what="b's node to run", since=killed_at)
        assert not pid_alive(node_a)
    watch.assert_never_two()
    print(f"same machineName: {watch.samples} samples over 3 W, one node; after SIGKILL of the "
          f"holder the other took over in {takeover:.3f}s")


# --------------------------------------------------------------------------- failing node


def test_node_failing_at_start_on_a_moves_the_lease_to_b(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", ["--fail-at-start"])
        b = pair.add("b")
        watch.hosts = pair.hosts
        t0 = time.monotonic()
        a.start()
        epoch = a.wait_event("lease_acquired", 15)["epoch"]  # a holds the lease first
        b.start()
        a.wait_event("crash_loop", 15)
        a.wait_event("lease_released", 5)
        b_acquired = b.wait_event("lease_acquired", 5)
        assert b_acquired["epoch"] == epoch + 1
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=5.0, what="b's node to run")
        failover = time.monotonic() - t0
        assert a.state() == "cooldown"
        exits = a.events("node_exited")
        assert len(exits) == 3 and all(e["exit_code"] == 1 for e in exits)
        assert [e["delay"] for e in a.events("node_restart_scheduled")] == \
            pytest.approx([0.2, 0.4])
        assert a.wait_event("cooldown_started", 1)["seconds"] == pytest.approx(30)
        assert a.wait_event("node_output", 1)["line"] == "node failing at start"
        time.sleep(W)  # b keeps it; a stays out
        assert b.live_nodes() and a.live_nodes() == []
        assert len(b.events("node_started")) == 1
    watch.assert_never_two()
    print(f"fail at start on a: b's node running {failover:.3f}s after a was launched "
          f"({len(exits)} failed starts on a)")


# --------------------------------------------------------------------------- diagnosis


def test_sigusr2_prints_the_stacks_and_the_daemon_carries_on(pair: Cluster) -> None:
    """`kill -USR2` (faulthandler) shows where a daemon that went quiet is stuck, and
    changes nothing: the node keeps running under the same lease. The harness asks for
    it when an awaited event does not come, so a silent log says why."""
    a = pair.add("a")
    a.start()
    epoch = a.wait_event("lease_acquired", 15)["epoch"]
    node = a.wait_node_up(10)
    with pytest.raises(AssertionError) as missing:
        a.wait_event("no_such_event", 0.1)
    report = str(missing.value)
    assert "supervisor still running" in report
    assert "most recent call first" in report
    assert "supervisor/daemon/__main__.py" in report  # the main thread, in its loop
    mark = a.mark()
    a.wait_event("lease_renewed", 5, since=mark)  # still renewing, same lease
    assert a.proc is not None and a.proc.poll() is None
    assert live_node(a) == node
    assert a.events("lease_acquired")[-1]["epoch"] == epoch
