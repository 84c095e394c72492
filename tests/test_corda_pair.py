"""A real Corda pair's shape: node.conf as the one source, the JVM stand-in
with Corda's own guard ON, readiness by Corda's "registered" line, behind a real
HAProxy. Failover (kill -9 of the active supervisor) and handover move the traffic to
the other node, never two nodes at once; without a database fence Corda's lock row is
left to Corda's own mutual exclusion, which keeps the new node out until the row is old."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from tests.harness import haproxy, jvmnode
from tests.harness.cli import holders, run_cli
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.cordapair import CordaHost, add_corda_host, assert_corda_row_left_to_corda
from tests.harness.pgserver import PgServer, free_port
from tests.harness.proc import Reaper, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(180)


def backend(host: CordaHost) -> haproxy.Backend:
    assert host.node_conf is not None and host.node_conf.rpc_port is not None
    return haproxy.Backend(host.name, host.node_conf.p2p_port, host.health_port(),
                           rpc_port=host.node_conf.rpc_port)


def test_failover_and_handover_behind_haproxy_with_cordas_guard_on(
        pair: Cluster, pg_server: PgServer, reaper: Reaper, tmp_path: Path) -> None:
    jvmnode.require()
    haproxy.require()
    schema = f"corda_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f'CREATE SCHEMA "{schema}"')
    with Watcher(pair.hosts) as watch:
        # fixed health ports: haproxy checks a's port also after a's supervisor restarts
        a_health = free_port()
        fixed_port = supervisor_config(health={"port": a_health})
        a = add_corda_host(pair, "a", schema, extra_conf=fixed_port)
        b = add_corda_host(pair, "b", schema)
        watch.hosts = pair.hosts
        a.start()
        a.wait_event("node_ready", 60)
        b.start()
        b.wait_event("lease_seen", 20, match=lambda e: e["holder"] == "a")
        config = json.loads(run_cli("check-config", "--offline", "--config",
                                    str(a.config_path)).stdout)
        assert config["node"]["cordaConfig"] == str(a.root / "node.conf")
        assert config["mutualExclusionConfiguration"]["machineName"] == "a"
        with haproxy.HaProxy(tmp_path / "lb", [backend(a), backend(b)], inter_ms=100,
                             reaper=reaper) as lb:
            lb.wait_for("a", 10)
            assert lb.which("rpc") == "a"

            # failover: the active supervisor dies; b's node starts at once on the lease
            a.signal(signal.SIGKILL)
            failover = lb.wait_for("b", 30)
            # no database fence: Corda's row is left to Corda's own guard
            assert_corda_row_left_to_corda(b)

            # a comes back as the standby; a handover moves the traffic back, no W wait
            a2 = add_corda_host(pair, "a", schema, extra_conf=fixed_port)
            assert a.node_conf is not None and a2.node_conf is not None
            a2.node_conf.p2p_port, a2.node_conf.rpc_port = a.node_conf.p2p_port, \
                a.node_conf.rpc_port
            watch.hosts = pair.hosts
            a2.start()
            a2.wait_event("lease_seen", 20, match=lambda e: e["holder"] == "b")

            def a2_ready() -> bool:
                out = run_cli("status", "--json", "--config", str(a2.config_path))
                return any(m["machine_name"] == "a" and m["can_take_over"]
                           for m in json.loads(out.stdout)["members"])

            wait_until(a2_ready, 15, interval=0.2, message="a ready to take over")
            mark = a2.mark()
            out = run_cli("handover", "--to", "a", "--config", str(b.config_path))
            assert out.returncode == 0, out
            handover = lb.wait_for("a", 30)
            # b's node refreshed its row until it stopped: without a database fence a's
            # node waits Corda's own rule out (fencing makes a handover fast)
            assert_corda_row_left_to_corda(a2, since=mark)
            history = holders(a2.config_path)
    watch.assert_never_two()
    assert history[:3] == ["a", "b", "a"]
    print(f"\nCorda pair behind haproxy, Corda's guard on, W = 2 s, boot delay 0.5 s: traffic "
          f"on the other node {failover:.2f} s after kill -9 of the active supervisor, and "
          f"{handover:.2f} s after a handover request")
