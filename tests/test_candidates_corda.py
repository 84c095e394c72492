"""The candidate controls in production shape: Corda's timing ratio scaled down by ten
(updateInterval 2 s, waitInterval 4 s, a JVM-sized stopTimeout of 6 s), three hosts
whose node is the JVM stand-in with Corda's own guard on, each configured by its
Corda-style node.conf.

After a kill -9 of the holder's supervisor, the priority host takes over and the other
standby sends no acquisition; a handover set for a time and a member (`handover --at
--to`) then moves the node to that member within one updateInterval of the time. The
overlap watcher runs throughout.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from tests.harness import jvmnode
from tests.harness.bounds import allowance, wait_within
from tests.harness.candidates import acquisitions_sent, candidate, local_iso, members_seen
from tests.harness.cli import holders, run_cli
from tests.harness.cluster import Cluster
from tests.harness.cordapair import CordaHost, add_corda_host
from tests.harness.host import log_seconds
from tests.harness.loadprobe import LoadWatch
from tests.harness.pgserver import PgServer
from tests.harness.proc import wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(240)

# Corda's updateInterval = 20000, waitInterval = 40000 and a 60 s JVM stop, / 10
U_MS, W_MS, STOP_MS = 2000, 4000, 6000
U, W = U_MS / 1000, W_MS / 1000
SCHEDULE_LEAD = 10.0  # seconds from `handover --at` to the time it sets


def corda_host(c: Cluster, name: str, schema: str, priority: int) -> CordaHost:
    return add_corda_host(c, name, schema, update_ms=U_MS, wait_ms=W_MS, stop_ms=STOP_MS,
                          extra_conf=candidate(priority))


def test_priority_takeover_and_a_scheduled_handover_with_jvm_nodes(
        pair: Cluster, pg_server: PgServer, load: LoadWatch) -> None:
    jvmnode.require()
    schema = f"corda_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f'CREATE SCHEMA "{schema}"')
    with Watcher(pair.hosts) as watch:
        a = corda_host(pair, "a", schema, 0)
        b = corda_host(pair, "b", schema, 0)
        c = corda_host(pair, "c", schema, 5)
        watch.hosts = pair.hosts
        a.start()
        a.wait_event("node_ready", 60)
        b.start()
        c.start()
        for standby in (b, c):
            standby.wait_event("lease_seen", 30, match=lambda e: e["holder"] == "a")
        members_seen(a, {"a", "b", "c"})
        wait_until(lambda: b.status()[1].get("priority_wait") == U, 30, interval=0.1,
                   message="b sees c's higher priority")

        # the holder's supervisor dies: c, of the higher priority, takes over; b, whose
        # wait is one updateInterval longer, never sends an acquisition
        killed_at = time.monotonic()
        a.signal(signal.SIGKILL)
        took = wait_within(lambda: c.live_nodes(), W, load, floor=2.0, since=killed_at,
                           what="c (priority 5) runs the node")
        b.no_event("lease_acquired", U)
        b_tries = acquisitions_sent(b)
        assert b_tries == 0 and b.live_nodes() == []
        c.wait_event("node_ready", 60)

        # a handover set for a time and a member: at the time, c stops its JVM and b
        # (not a, which is gone, nor any other) takes over
        at, at_s = local_iso(SCHEDULE_LEAD)
        out = run_cli("handover", "--at", at, "--to", "b", "--config", str(c.config_path))
        assert out.returncode == 0, out
        assert time.time() < at_s, "premise: the schedule was set before its time"
        due = c.wait_event("handover_schedule_due", at_s - time.time() + 30)
        late = log_seconds(due) - at_s
        assert -0.05 <= late <= U + allowance(load, spawns=0), late
        b.wait_event("lease_acquired", W + STOP_MS / 1000 + 30)
        b.wait_event("node_ready", 60)  # readiness: Corda's "registered" line
        assert c.live_nodes() == []
        history = holders(b.config_path)
    watch.assert_never_two()
    assert history[:3] == ["b", "c", "a"]
    print(f"\nJVM nodes, U = {U:g} s, W = {W:g} s, stop {STOP_MS / 1000:g} s: c (priority 5) "
          f"ran the node {took:.3f} s after kill -9 of a's supervisor; b sent "
          f"{b_tries:g} acquisitions; the scheduled handover began "
          f"{late:.3f} s after its time and moved the node to b")
