"""End to end: two supervisors (hosts a and b), one real PostgreSQL, a stand-in node.

U = 0.5 s, W = 2 s, stopTimeout = 0.5 s, margin = 0.2 s. Every test watches both
hosts' nodes every 5 ms and fails if two ever ran at once.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.harness.bounds import GIVE_UP, kill_within, wait_within, within
from tests.harness.cluster import Cluster, start_pair
from tests.harness.config import lease, write_config
from tests.harness.host import STOP_MS, W, http_get, log_seconds
from tests.harness.loadprobe import LoadWatch
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(90)


def test_one_node_runs_other_host_is_standby(pair: Cluster) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        assert pair.active(5) is a
        time.sleep(2 * W)  # observe a steady state for a while: nothing may change
        assert pair.active(1) is a
        assert b.live_nodes() == []
        assert b.state() in (None, "standby")  # b never left standby
        assert not a.events("lease_renewal_failed")
        started = a.events("node_started")
        assert len(started) == 1
        # health endpoint: a is healthy, b is not
        code_a, _ = http_get(a.health_port(), "/health")
        code_b, _ = http_get(b.health_port(), "/health")
        assert (code_a, code_b) == (200, 503)
        code, body = http_get(a.health_port(), "/status")
        status = json.loads(body)
        assert code == 200
        assert status["state"] == "active" and status["machine_name"] == "a"
        assert status["holder"] == "a" and status["epoch"] >= 1
        assert status["node_pid"] == a.live_nodes()[0]
        assert http_get(b.health_port(), "/liveness")[0] == 200
        rec = a.node_record(a.live_nodes()[0])
        assert rec["epoch"] == str(status["epoch"]) and rec["machine_name"] == "a"
        assert rec["notify_socket"] is None
    watch.assert_never_two()


def test_kill_9_of_active_supervisor_fails_over_within_w_plus_1s(pair: Cluster,
                                                                 load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        (node_a,) = a.live_nodes()
        mark = b.mark()
        killed_at = time.monotonic()
        a.signal(signal.SIGKILL)
        # the guard sees its supervisor gone (EOF) and kills the node at once
        node_gone = wait_within(lambda: not pid_alive(node_a), 0.0, load, floor=1.5, spawns=0,
                                what="a's node to die", since=killed_at)
        failover = wait_within(lambda: b.live_nodes(), W, load, floor=1.0,
                               what="b's node to run", since=killed_at)
        b.wait_event("lease_acquired", 1, since=mark)
    watch.assert_never_two()
    print(f"kill -9: node gone after {node_gone:.3f}s, failover {failover:.3f}s "
          f"= {failover / W:.2f} W")



def test_sigterm_of_active_supervisor_hands_over_within_1s(pair: Cluster,
                                                           load: LoadWatch) -> None:
    """Timed by the supervisors' own log times, from a's shutdown_requested to b's
    node_started: a's node stops (at once on SIGTERM), a releases, b is woken by NOTIFY
    and starts a guard and a node (two interpreters: the allowance grows with load)."""
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        (node_a,) = a.live_nodes()
        mark_b = b.mark()
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        wait_until(lambda: b.live_nodes(), GIVE_UP, message="b's node to run")
        handover = time.monotonic() - t0
        assert a.exit_code(10) == 0
        assert not pid_alive(node_a)
        assert a.events("lease_released")
        rec = a.node_record(node_a)
        assert rec["stop"] is not None, "a's node was stopped gracefully (SIGTERM)"
        moved = (log_seconds(b.wait_event("node_started", 5, since=mark_b))
                 - log_seconds(a.wait_event("shutdown_requested", 1)))
    watch.assert_never_two()
    limit = within(min(1.0, STOP_MS / 1000), load, spawns=2)
    print(f"SIGTERM handover: {handover:.3f}s from the signal; {moved:.3f}s from a's "
          f"shutdown_requested to b's node_started (limit {limit:.3f}s)")
    assert 0 < moved < limit


def test_node_crash_restarts_with_backoff_under_same_epoch(pair: Cluster) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        (node_a,) = a.live_nodes()
        epoch = a.wait_event("lease_acquired", 1)["epoch"]
        mark = a.mark()
        t0 = time.monotonic()
        import os
        os.kill(node_a, signal.SIGKILL)
        restarted = a.wait_event("node_started", 5, since=mark)
        latency = time.monotonic() - t0
        assert restarted["epoch"] == epoch
        sched = a.wait_event("node_restart_scheduled", 1, since=mark)
        assert sched["delay"] == pytest.approx(0.2)
        assert b.live_nodes() == []
        assert pair.active(2) is a
    watch.assert_never_two()
    print(f"crash to restart: {latency:.3f}s (backoff 0.2s)")


def test_crash_loop_gives_the_lease_to_the_other_host(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        # Not start_pair: a's crash loop can end, and a release the lease, before a
        # loaded machine has b read the row once, so b may first see it held or free.
        a = pair.add("a", ["--crash-after", "0.3"])
        b = pair.add("b")
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        b.wait_event("lease_seen", 15)
        a.wait_event("crash_loop", 15)
        a.wait_event("lease_released", 5)
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=3.0,
                    what="b takes over after a's crash loop")
        assert a.state() == "cooldown"
        starts = a.events("node_started")
        assert len(starts) == 3 and len({s["epoch"] for s in starts}) == 1
        delays = [e["delay"] for e in a.events("node_restart_scheduled")]
        assert delays == pytest.approx([0.2, 0.4])
    watch.assert_never_two()


def test_frozen_supervisor_node_dies_before_w_and_other_host_takes_over(
        pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        (node_a,) = a.live_nodes()
        a.wait_event("lease_acquired", 1)
        a.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            wait_until(lambda: not pid_alive(node_a), W, message="a's node dead before W")
            dead_after = time.monotonic() - frozen_at
            takeover = wait_within(lambda: b.live_nodes(), W, load, floor=1.5,
                                   what="b's node runs", since=frozen_at)
        finally:
            a.signal(signal.SIGCONT)
        # a comes back, finds its lease gone, and stays out
        a.wait_event("state_changed", 5, match=lambda e: e["to"] == "standby")
        time.sleep(W)
        assert a.live_nodes() == []
    watch.assert_never_two()
    # its node died by the guard's deadline: t + W - M, with t the last renewal sent,
    # which is at most U before the freeze.
    print(f"SIGSTOP: node dead {dead_after:.3f}s after freeze, takeover {takeover:.3f}s")
    assert dead_after < kill_within(W - 0.2, load, floor=0.1)


def test_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.harness.paths import REPO

    conf = write_config(tmp_path / "bad.conf", lease=lease("x", updateIntervall=3),
                        database={"url": "postgresql://localhost/x"}, node={"command": ["true"]})
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--config", str(conf)],
                       capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 78
    assert "updateIntervall" in r.stderr and str(conf) in r.stderr
    assert "updateInterval" in r.stderr  # did you mean
