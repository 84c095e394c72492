"""Hooks (issue 8 item 6): onRoleChange after each change of this host's role, with
its environment; preStop before SIGTERM on planned stops only, within the grace; a
hanging hook is killed and never holds up the stop. Real supervisors."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.cluster import Cluster, Watcher
from tests.faultproxy import FaultProxy
from tests.pgserver import PgServer
from tests.proc import wait_until

pytestmark = pytest.mark.timeout(90)


def hooks(path: Path, pre_stop: str = "echo prestop >> {f}", timeout: str = "5s") -> str:
    role = f'echo "$CORDA_HA_ROLE $CORDA_HA_EPOCH $CORDA_HA_MACHINE_NAME" >> {path}'
    return (f"hooks {{ onRoleChange = {json.dumps(['sh', '-c', role])}, "
            f"preStop = {json.dumps(['sh', '-c', pre_stop.format(f=path)])}, "
            f"timeout = {timeout} }}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_role_changes_and_pre_stop_on_a_planned_stop(pair: Cluster, tmp_path: Path) -> None:
    fa, fb = tmp_path / "a.hooks", tmp_path / "b.hooks"
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", ["--stop-delay", "0.2"], stop_ms=3000, extra_conf=hooks(fa))
        b = pair.add("b", extra_conf=hooks(fb))
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
        wait_until(lambda: lines(fa) == ["standby  a", "active 1 a"], 5, message="a's roles")
        wait_until(lambda: lines(fb) == ["standby  b"], 5, message="b's role")
        mark = a.mark()
        a.signal(signal.SIGTERM)  # a planned stop: preStop first, then SIGTERM
        done = a.wait_event("hook_done", 5, since=mark, match=lambda e: e["hook"] == "preStop")
        exited = a.wait_event("node_exited", 10, since=mark)
        assert a.lines.index(done) < a.lines.index(exited)
        assert "prestop" in lines(fa)
        wait_until(lambda: "active 2 b" in lines(fb), 10, message="b became active")
    watch.assert_never_two()


def test_a_hanging_pre_stop_is_killed_within_the_grace(pair: Cluster, tmp_path: Path) -> None:
    fa = tmp_path / "a.hooks"
    a = pair.add("a", stop_ms=2000, extra_conf=hooks(fa, "sleep 100", timeout="30s"))
    a.start()
    node = a.wait_node_up(15)
    mark = a.mark()
    a.signal(signal.SIGTERM)
    failed = a.wait_event("hook_failed", 5, since=mark)  # at half the 2 s grace
    assert failed["hook"] == "preStop" and "did not finish within 1 s" in failed["error"]
    a.wait_event("node_exited", 5, since=mark)
    assert a.exit_code(10) == 0
    assert node not in a.live_nodes()


def test_no_pre_stop_when_the_lease_is_lost(pair: Cluster, tmp_path: Path,
                                           pg_server: PgServer) -> None:
    """A stop forced by a lost lease does not wait for an operator's hook."""
    fa = tmp_path / "a.hooks"
    proxy = FaultProxy(pg_server.host, pg_server.port)
    try:
        a = pair.add("a", dsn=pg_server.dsn_via("127.0.0.1", proxy.port), extra_conf=hooks(fa))
        a.start()
        a.wait_node_up(15)
        mark = a.mark()
        proxy.set_mode("blackhole")
        a.wait_event("node_stopping", 10, since=mark,
                     match=lambda e: e["reason"] == "renewal_overdue")
        a.wait_event("node_exited", 5, since=mark)
        assert not [e for e in a.events("hook_done") + a.events("hook_failed")
                    if e["hook"] == "preStop"]
        assert "prestop" not in lines(fa)
    finally:
        proxy.close()
