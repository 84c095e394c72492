"""Fault injection end to end: the database goes away, the network to it breaks, the
guard dies, the node misbehaves on SIGTERM.

Two supervisors (hosts a and b), one real PostgreSQL, the stand-in node.
U = 0.5 s, W = 2 s, S (stopTimeout) = 0.5 s, M (margin) = 0.2 s, operationTimeout 0.4 s.
So with t the send time of a's last successful renewal: SIGTERM at t + 1.3 s, SIGKILL
at t + 1.8 s, and nobody else may start a node before t + 2 s.

The invariant, checked in every test: never two nodes at once (a Watcher samples
both hosts' nodes every 5 ms), and a node runs within W plus an allowance for the
measured load (tests/harness/bounds.py, never below 1 s) whenever a healthy host and
the database are up. Safety bounds (a node dead by t + W - M, no start before t + W)
are exact.

Tests that stop the session's PostgreSQL always start it again (finally), so later
tests see a database. Tests that cut one host off use a FaultProxy per host
(`pg_server.dsn_via`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.bounds import GIVE_UP, allowance, kill_within, within
from tests.harness.cluster import Cluster, start_pair
from tests.harness.faultproxy import FaultProxy
from tests.harness.host import Host, W
from tests.harness.loadprobe import LoadWatch, measure
from tests.harness.pgserver import PgServer
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(120)

U = 0.5
S = 0.5  # node.stopTimeout
M = 0.2  # fencing margin: min(2 s, W / 10)
SLACK = W - U - S - M  # 0.8 s: one missed renewal still leaves time to renew before SIGTERM
TERM_AFTER = W - M - S  # 1.3 s after the last renewal: SIGTERM
KILL_AFTER = W - M  # 1.8 s after the last renewal: SIGKILL
LATENCY = 0.1  # the least slack for the guard's wake-up, kill and our 10 ms polling


# ------------------------------------------------------------------ helpers


def _need_restartable(pg: PgServer) -> None:
    if not pg.can_restart:
        pytest.skip("the database is external (CORDA_HA_TEST_DSN): cannot stop/start it")


def _ensure_db_up(pg: PgServer) -> None:
    """Start the session's database again if a test left it down."""
    try:
        pg.execute("SELECT 1")
        return
    except Exception:
        pass
    pg.start()


def _start_pair_via(pair: Cluster, pg: PgServer, make_proxy: Callable[[], FaultProxy],
                    a_args: list[str] | None = None, b_args: list[str] | None = None,
                    **kw: Any) -> tuple[Host, Host, FaultProxy, FaultProxy]:
    """Like start_pair, but each host reaches the database through its own proxy. `kw`
    goes to both hosts (e.g. wait_ms)."""
    pa, pb = make_proxy(), make_proxy()
    a = pair.add("a", a_args, dsn=pg.dsn_via("127.0.0.1", pa.port), **kw)
    b = pair.add("b", b_args, dsn=pg.dsn_via("127.0.0.1", pb.port), **kw)
    a.start()
    a.wait_node_up(15)
    b.start()
    b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    return a, b, pa, pb





def _wait_dead_tracking_renewal(host: Host, pid: int, timeout: float,
                                last_renewal: float | None) -> tuple[float, float | None]:
    """Poll until `pid` is dead; meanwhile track `host`'s last successful renewal.

    Returns (when the pid was first seen dead, last renewal send time seen)."""
    deadline = time.monotonic() + timeout
    next_status = 0.0
    while True:
        if not pid_alive(pid):
            return time.monotonic(), last_renewal
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"{host.name}'s node {pid} still alive after {timeout:.2f}s")
        if now >= next_status:
            with_renewal = host.renewal_sent_at()
            if with_renewal is not None:
                last_renewal = max(last_renewal or with_renewal, with_renewal)
            next_status = time.monotonic() + 0.05
        time.sleep(0.005)


def _wait_dead(pid: int, timeout: float, what: str) -> float:
    wait_until(lambda: not pid_alive(pid), timeout, interval=0.005, message=what)
    return time.monotonic()



def _first_node_start(host: Host) -> tuple[int, float]:
    """(pid, start time) of `host`'s first node (from the stand-in's record, which the
    node writes a moment after its process is seen)."""
    wait_until(host.node_records, 5, message=f"{host.name}: a node record")
    recs = sorted(host.node_records(), key=lambda r: r["start"])
    return int(recs[0]["pid"]), float(recs[0]["start"])



# ------------------------------------------------------------------ 1. database down


def test_database_down_for_everyone_longer_than_w(pair: Cluster, pg_server: PgServer,
                                                    load: LoadWatch) -> None:
    _need_restartable(pg_server)
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        (node_a,) = a.live_nodes()
        mark_a = a.mark()
        try:
            t_last = a.renewal_sent_at()
            t_stop = time.monotonic()
            pg_server.stop("immediate")
            t_stopped = time.monotonic()
            dead_at, t_last = _wait_dead_tracking_renewal(a, node_a, W + 1.0, t_last)
            assert t_last is not None
            # a's node got SIGTERM first (the stand-in records `stop` on a graceful exit)
            rec = a.node_record(node_a)
            stopping = a.wait_event("node_stopping", 1, since=mark_a)
            assert stopping["reason"] == "renewal_overdue", stopping
            assert rec["stop"] is not None, "a's node was not stopped gracefully first"
            term_at = float(rec["stop"])
            a.wait_event("lease_renewal_failed", 1, since=mark_a)
            a.wait_event("state_changed", 5, since=mark_a, match=lambda e: e["to"] == "standby")
            # keep the database down for longer than W: nobody may run a node meanwhile
            down_until = t_stop + W + 1.0
            while time.monotonic() < down_until:
                assert pair.live() == {"a": [], "b": []}, pair.live()
                time.sleep(0.05)
            a.assert_no_errors(running=True)
            b.assert_no_errors(running=True)
            assert a.state() == "standby" and b.state() in (None, "standby")
            t_start = time.monotonic()
            pg_server.start()
            t_up = time.monotonic()
        finally:
            _ensure_db_up(pg_server)
        winner = pair.active(GIVE_UP)
        t_node = time.monotonic()
        (pid,) = winner.live_nodes()
        time.sleep(W)  # it stays single and stable
        assert pair.active(0.5) is winner and winner.live_nodes() == [pid]
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    print(f"\nDB down: stop took {t_stopped - t_stop:.3f}s; last renewal {t_last - t_stop:+.3f}s "
          f"from the stop; SIGTERM handled {term_at - t_last:.3f}s after it (<= {TERM_AFTER}), "
          f"node dead {dead_at - t_last:.3f}s after it (<= {KILL_AFTER}) = "
          f"{dead_at - t_stop:.3f}s after the stop began; DB start took {t_up - t_start:.3f}s; "
          f"{winner.name} ran a node {t_node - t_up:.3f}s after the DB was up")
    assert term_at - t_last < kill_within(TERM_AFTER, load, floor=LATENCY)
    assert dead_at - t_last < kill_within(KILL_AFTER, load, floor=LATENCY)
    assert dead_at - t_stop < W
    assert t_node - t_up < within(W, load, spawns=2, floor=1.0)


# ------------------------------------------------------------------ 2. database restart


def test_fast_database_restart_keeps_one_node(pair: Cluster, pg_server: PgServer,
                                               load: LoadWatch) -> None:
    _need_restartable(pg_server)
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        (node_a,) = a.live_nodes()
        try:
            t_begin = time.monotonic()
            pg_server.stop("fast")
            pg_server.start()
            t_up = time.monotonic()
        finally:
            _ensure_db_up(pg_server)
        down = t_up - t_begin
        winner = pair.active(GIVE_UP)
        t_node = time.monotonic()
        time.sleep(W)  # watch it settle: still exactly one node, the same one
        (pid,) = winner.live_nodes()
        assert pair.active(0.5) is winner and winner.live_nodes() == [pid]
        kept = pid == node_a and not a.events("node_stopping")
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    failures = len(a.events("lease_renewal_failed"))
    print(f"\nDB fast restart: down {down:.3f}s; a's renewal failures {failures}; "
          f"{'a kept its node' if kept else f'node now on {winner.name} pid {pid}'}; "
          f"a node ran {max(0.0, t_node - t_up):.3f}s after the DB was up")
    assert t_node - t_up < within(W, load, spawns=2, floor=1.0)
    # a renewal is retried every 0.125 s: a database back within ~0.6 s of the stop is
    # back before a's SIGTERM deadline (t + 1.3 s with t >= the stop - U)
    if down < TERM_AFTER - U - 0.2:
        assert kept, f"a lost its node although the database was down only {down:.3f}s"


# ------------------------------------------------------------------ 3. short blackhole


def _wait_for_reconnect(duration: float) -> tuple[float, float]:
    """W (and its TERM_AFTER) whose slack W - U - S - M covers a cut of `duration`, one
    hedge interval (U/8) and a reconnect on this machine now: a process start (the
    backend's fork, the proxy's threads) and 20 wake-ups, measured (2.0 s when idle)."""
    reconnect = allowance(measure(), spawns=1, base=0.1, turns=20)
    w = round(max(W, (U + S + duration + U / 8 + reconnect) / 0.9), 2)  # M = W / 10
    return w, w - min(2.0, w / 10) - S


@pytest.mark.parametrize(("phase", "duration"), [(U / 2, 0.65), (U - 0.02, 0.65)],
                         ids=["mid-interval-0.65s", "just-before-renewal-0.65s"])
def test_short_blackhole_of_active_host_keeps_its_node(
        pair: Cluster, pg_server: PgServer, proxies: Callable[[], FaultProxy],
        phase: float, duration: float) -> None:
    """A cut-off shorter than the slack W - U - S - M less one hedge interval (U/8) and
    a reconnect never costs the node, wherever it starts relative to the renewals. The
    second case is the worst alignment: the fault begins just before a renewal is sent,
    so that renewal's first connection hangs for good. The cut is 0.65 s; W leaves just
    a reconnect's time beyond it, as measured on this machine before the pair starts
    (W = 2 s, the slack 0.8 s, when the machine is idle)."""
    wait, term_after = _wait_for_reconnect(duration)
    with Watcher(pair.hosts) as watch:
        a, b, pa, _pb = _start_pair_via(pair, pg_server, proxies, wait_ms=int(wait * 1000))
        (node_a,) = a.live_nodes()
        epoch = a.wait_event("lease_acquired", 1)["epoch"]
        mark_a = a.mark()
        t_last = a.renewal_sent_at()
        assert t_last is not None
        t0 = t_last + phase
        while t0 < time.monotonic() + 0.02:
            t0 += U
        time.sleep(t0 - time.monotonic())
        t0 = time.monotonic()
        pa.set_mode("blackhole")
        try:
            t_last = a.renewal_sent_at()  # the last renewal that got through
            time.sleep(t0 + duration - time.monotonic())
        finally:
            pa.set_mode("pass")
        assert t_last is not None
        t_pass = time.monotonic()
        failed = a.wait_event("lease_renewal_failed", 2, since=mark_a)
        # recovery: a renewal sent after the proxy passes again
        recovered: list[float] = []

        def renewed_after_pass() -> bool:
            at = a.renewal_sent_at()
            if at is not None and at > t_pass:
                recovered.append(at)
                return True
            return False

        wait_until(renewed_after_pass, wait, interval=0.05,
                   message="a renews again after the blackhole")
        time.sleep(wait)  # nothing may change for a while
        assert recovered[0] - t_last < term_after
        assert a.live_nodes() == [node_a]
        assert b.live_nodes() == []
        assert not a.events("node_stopping") and not a.events("lease_lost")
        assert not b.events("lease_acquired")
        assert a.state() == "active"
        _, st = a.status()
        assert st["epoch"] == epoch and st["node_pid"] == node_a and st["healthy"]
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    failures = a.events("lease_renewal_failed")
    print(f"\nshort blackhole ({duration} s at +{phase:.2f}s): {len(failures)} "
          f"renewal failure(s), first reason "
          f"{failed['reason']!r} time_left {failed['time_left']}s; last renewal before "
          f"{t0 - t_last:.3f}s before the fault; renewed again {recovered[0] - t_pass:.3f}s "
          f"after the proxy passed ({recovered[0] - t_last:.3f}s gap < {term_after:.2f}s, "
          f"W = {wait:g} s); node pid unchanged")


# ------------------------------------------------------------------ 4/5. long cut-off


@pytest.mark.parametrize("mode", ["blackhole", "reset"])
def test_active_host_cut_off_longer_than_w_fails_over(
        pair: Cluster, pg_server: PgServer, proxies: Callable[[], FaultProxy],
        mode: str, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, pa, _pb = _start_pair_via(pair, pg_server, proxies)
        (node_a,) = a.live_nodes()
        mark_a = a.mark()
        t_last = a.renewal_sent_at()
        t0 = time.monotonic()
        pa.set_mode(mode)  # type: ignore[arg-type]
        try:
            dead_at, t_last = _wait_dead_tracking_renewal(a, node_a, W + 1.0, t_last)
            assert t_last is not None
            wait_until(lambda: b.live_nodes(), t0 + GIVE_UP - time.monotonic(),
                       interval=0.005, message="b's node runs")
            b_pid, b_start = _first_node_start(b)
            a.wait_event("state_changed", 5, since=mark_a,
                         match=lambda e: e["to"] == "standby")
            rest = t0 + 4.0 - time.monotonic()
            if rest > 0:
                time.sleep(rest)  # the fault lasts 4 s in all
            assert a.live_nodes() == []
            a.assert_no_errors(running=True)
        finally:
            pa.set_mode("pass")
        mark_pass = a.mark()
        # a reaches the database again, sees b holding the lease, and stays out
        a.wait_event("lease_seen", 5, since=mark_pass, match=lambda e: e["holder"] == "b")
        time.sleep(W)
        assert a.live_nodes() == [] and a.state() == "standby"
        assert b.live_nodes() == [b_pid]
        rec = a.node_record(node_a)
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    print(f"\ncut off ({mode}, 4 s): last renewal {t0 - t_last:.3f}s before the fault; "
          f"a's node {'stopped gracefully' if rec['stop'] is not None else 'killed'}, dead "
          f"{dead_at - t_last:.3f}s after the last renewal (<= {KILL_AFTER}); b's node started "
          f"{b_start - t_last:.3f}s after it (>= {W}), {b_start - dead_at:.3f}s after a's "
          f"died, {b_start - t0:.3f}s after the fault began")
    assert dead_at - t_last < kill_within(KILL_AFTER, load, floor=LATENCY)
    assert b_start > dead_at
    assert b_start - t_last >= W  # by the shared monotonic clock: nobody before t + W
    assert b_start - t_last < within(W, load, spawns=2, floor=1.0)
    assert b_start - t0 < within(W, load, floor=1.5)


# ------------------------------------------------------------------ 6. guard SIGKILL


def test_sigkill_of_the_guard_kills_the_node_and_one_node_runs_again(pair: Cluster,
                                                                     load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        (node_a,) = a.live_nodes()
        epoch = a.wait_event("lease_acquired", 1)["epoch"]
        guard = a.guard()
        assert node_a in [c.pid for c in guard.children()]
        mark_a = a.mark()
        t0 = time.monotonic()
        guard.kill()
        dead_at = _wait_dead(node_a, GIVE_UP, "a's node dies with its guard (PDEATHSIG)")
        assert dead_at - t0 < kill_within(0.0, load, floor=1.0)
        winner = pair.active(GIVE_UP)
        t_node = time.monotonic()
        exited = a.wait_event("node_exited", 2, since=mark_a)
        (pid,) = winner.live_nodes()
        if winner is a:
            started = a.wait_event("node_started", 1, since=mark_a)
            assert started["epoch"] == epoch, "restarted under a different epoch"
            assert a.guard().pid != guard.pid
        time.sleep(W)  # stays single
        assert pair.active(0.5) is winner and winner.live_nodes() == [pid]
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    print(f"\nguard SIGKILL: node dead {dead_at - t0:.3f}s after; node_exited killed_by="
          f"{exited.get('killed_by')} signal={exited.get('signal')} expected="
          f"{exited.get('expected')}; node running again on {winner.name} "
          f"{t_node - t0:.3f}s after the kill")
    assert t_node - t0 < within(W, load, spawns=2, floor=1.0)


# ------------------------------------------------------------------ 7. SIGTERM ignored


def test_node_ignoring_sigterm_is_killed_by_the_deadline_when_cut_off(
        pair: Cluster, pg_server: PgServer, proxies: Callable[[], FaultProxy],
        load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, pa, _pb = _start_pair_via(pair, pg_server, proxies, a_args=["--ignore-sigterm"])
        (node_a,) = a.live_nodes()
        mark_a = a.mark()
        t_last = a.renewal_sent_at()
        t0 = time.monotonic()
        pa.set_mode("blackhole")
        try:
            dead_at, t_last = _wait_dead_tracking_renewal(a, node_a, W + 1.0, t_last)
            assert t_last is not None
            wait_until(lambda: b.live_nodes(), t0 + GIVE_UP - time.monotonic(),
                       interval=0.005, message="b's node runs")
            _, b_start = _first_node_start(b)
            exited = a.wait_event("node_exited", 2, since=mark_a)
            stopping = a.wait_event("node_stopping", 1, since=mark_a)
        finally:
            pa.set_mode("pass")
        rec = a.node_record(node_a)
        assert rec["stop"] is None, "the node ignores SIGTERM: it cannot have exited gracefully"
        assert exited["signal"] == signal.SIGKILL, exited
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    print(f"\nSIGTERM ignored, cut off: SIGTERM (grace {stopping['grace']}s) then SIGKILL "
          f"(killed_by={exited['killed_by']}); node dead {dead_at - t_last:.3f}s after the last "
          f"renewal (<= {KILL_AFTER}), {dead_at - t0:.3f}s after the fault began; b's node "
          f"started {b_start - t_last:.3f}s after the last renewal, {b_start - dead_at:.3f}s "
          f"after a's died")
    assert dead_at - t_last < kill_within(KILL_AFTER, load, floor=LATENCY)
    assert dead_at - t0 < W
    assert b_start > dead_at
    assert b_start - t_last >= W
    assert b_start - t0 < within(W, load, floor=1.5)


# ------------------------------------------------------------------ 8. slow node stop


def test_slow_stopping_node_is_killed_after_stop_timeout_on_shutdown(pair: Cluster,
                                                                      load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair, a_args=["--stop-delay", "5"])
        (node_a,) = a.live_nodes()
        mark_a = a.mark()
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        dead_at = _wait_dead(node_a, GIVE_UP, "a's node killed after stopTimeout")
        wait_until(lambda: b.live_nodes(), GIVE_UP, interval=0.005, message="b's node runs")
        _, b_start = _first_node_start(b)
        code = a.exit_code(10)
        exited = a.wait_event("node_exited", 1, since=mark_a)
        rec = a.node_record(node_a)
        assert rec["stop"] is None, "the node needed 5 s to stop: it must have been killed"
        assert exited["signal"] == signal.SIGKILL, exited
        assert a.events("lease_released")
        a.assert_no_errors()
        b.assert_no_errors(running=True)
    watch.assert_never_two()
    print(f"\nslow stop on SIGTERM: node killed {dead_at - t0:.3f}s after (S = {S}s, killed_by="
          f"{exited['killed_by']}); supervisor exit {code}; b's node started "
          f"{b_start - t0:.3f}s after the SIGTERM ({b_start - dead_at:.3f}s after a's died)")
    assert code == 0
    assert S - 0.05 <= dead_at - t0 < kill_within(S, load, floor=0.3)
    assert b_start > dead_at
    assert b_start - t0 < within(S, load, spawns=2, floor=1.0)
