"""End to end in production shape: Corda's 20:40 timing ratio with a
JVM-sized stopTimeout, and two hosts that share a host name and a machineName but
not a machine (one in its own PID namespace, as a cloned VM or a container is).

Real supervisors, real PostgreSQL, the stand-in node; a Watcher samples every 5 ms
and fails the test if two nodes ever ran at once.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.harness.bounds import GIVE_UP, wait_within, within
from tests.harness.cluster import Cluster
from tests.harness.host import Host, http_get
from tests.harness.loadprobe import LoadWatch
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(120)

# Corda's updateInterval = 20000, waitInterval = 40000 with a 60 s JVM stop, / 20.
CU_MS, CW_MS, CS_MS = 1000, 2000, 3000
CW = CW_MS / 1000
M = min(2.0, CW / 10)


def corda_host(c: Cluster, name: str, node_args: list[str] | None = None) -> Host:
    return c.add(name, node_args, update_ms=CU_MS, wait_ms=CW_MS, stop_ms=CS_MS)


def renewals(host: Host, since: int = 0) -> list[dict[str, object]]:
    with host.cond:
        return [e for e in host.lines[since:] if e.get("event") == "lease_renewed"]


def test_cordas_ratio_runs_steadily_fails_over_in_about_w_and_stops_with_full_s(
        pair: Cluster, load: LoadWatch) -> None:
    """On the old rule (SIGTERM at t + W - M - S) this ratio SIGTERMed every node right
    after its start and the pair flapped for ever."""
    stop_delay = 2.5  # the node needs 2.5 s to stop: more than W - M = 1.8 s, less than S
    with Watcher(pair.hosts) as watch:
        a = corda_host(pair, "a", ["--stop-delay", str(stop_delay)])
        b = corda_host(pair, "b", ["--stop-delay", str(stop_delay)])
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
        graces = a.wait_event("stop_graces", 1)
        assert graces["planned_stop_grace"] == pytest.approx(3.0)
        assert graces["lease_loss_grace"] == pytest.approx(0.4)

        # steady: ten renewals, one node start, no stop of any kind
        a.wait_event("lease_renewed", 15 * CW, match=lambda e: len(renewals(a)) >= 10)
        assert len(a.events("node_started")) == 1
        for bad in ("node_stopping", "lease_renewal_overdue", "lease_lost", "node_killed",
                    "lease_acquired_too_late", "lease_renewal_failed"):
            assert not a.events(bad), f"a logged {bad}: {a.events(bad)}"
        assert not b.events("lease_acquired")

        # a's host dies: b takes over about W after a's last renewal
        (node_a,) = a.live_nodes()
        last = renewals(a)[-1]
        killed_at = time.monotonic()
        a.signal(signal.SIGKILL)
        wait_within(lambda: not pid_alive(node_a), 0.0, load, floor=1.5, spawns=0,
                    what="a's node killed by its guard", since=killed_at)
        wait_until(lambda: b.live_nodes(), GIVE_UP, message="b's node to run")
        took = time.monotonic() - float(last["sent_at"])  # type: ignore[arg-type]
        assert took >= CW  # never before W after a's last renewal (the watcher checks too)
        assert took <= within(CW + CU_MS / 1000, load, spawns=2), (took, load.load())

        # a comes back as the standby; b is stopped as systemd stops it: the node gets its
        # full S (here it needs 2.5 s > W - M) while b keeps renewing, then b releases
        a2 = corda_host(pair, "a", ["--stop-delay", str(stop_delay)])
        watch.hosts = pair.hosts
        a2.start()
        a2.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "b")
        (node_b,) = b.live_nodes()
        mark = b.mark()
        b.signal(signal.SIGTERM)
        stopping = b.wait_event("node_stopping", 5, since=mark)
        assert stopping["reason"] == "shutdown" and stopping["grace"] == pytest.approx(3.0)
        exited = b.wait_event("node_exited", stop_delay + 3, since=mark)
        # it exited by itself after the SIGTERM (killed_by names that last signal)
        assert exited["expected"] and exited["exit_code"] == 0 and exited["signal"] is None
        assert exited["runtime"] > stop_delay
        assert len(renewals(b, mark)) >= 2, "b kept renewing while its node stopped"
        b.wait_event("lease_released", 5, since=mark)
        assert b.exit_code(10) == 0
        wait_within(lambda: a2.live_nodes(), 0.0, load, floor=5.0, what="a's new node to run")
        assert not pid_alive(node_b)
    watch.assert_never_two()
    print(f"Corda ratio U={CU_MS} W={CW_MS} S={CS_MS} ms: 10 renewals steady; failover "
          f"{took:.3f} s after the last renewal ({took / CW:.2f} W); planned stop of "
          f"{exited['runtime']:.2f} s with renewals; load {load.load()}")


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid --mount-proc needs root")
def test_same_machine_name_in_another_pid_namespace_is_a_conflict_never_a_takeover(
        pair: Cluster) -> None:
    """A cloned host (same host name, same machineName, another machine: here another PID
    namespace, where a's pid is invisible) must never take the lease at once. On the old
    code it took it while a's node ran, every time."""
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", machine_name="same")
        b = pair.add("b", machine_name="same", pid_namespace=True)
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        conflict = b.wait_event("machine_name_conflict", 15)
        assert conflict["level"] == "error" and "another machine" in conflict["detail"]
        code, body = http_get(b.health_port(), "/status")
        status = json.loads(body)
        assert code == 200 and status["can_take_over"] is False
        assert "another machine" in status["machine_name_conflict"]
        assert status["machine_identity"] != a.wait_event(
            "supervisor_started", 1)["machine_identity"]
        time.sleep(3 * CW)  # an observation window: nothing may change
        assert not b.events("lease_acquired")
        assert not b.events("lease_takeover_from_dead_predecessor")
        assert len(a.events("node_started")) == 1
        assert not a.events("lease_lost") and not a.events("node_stopping")

        # a dies: b takes the lease by the normal rule only, W after a's last renewal
        last = renewals(a)[-1] if renewals(a) else a.events("lease_acquired")[-1]
        a.signal(signal.SIGKILL)
        wait_until(lambda: b.live_nodes(), 2 * CW + 5, message="b's node to run")
        took = time.monotonic() - float(last["sent_at"])  # type: ignore[arg-type]
        assert not b.events("lease_takeover_from_dead_predecessor")
        assert took >= CW
    watch.assert_never_two()
    print(f"same machineName in another PID namespace: conflict logged, no takeover; after "
          f"SIGKILL of the holder b took over {took:.3f} s after its last renewal")
