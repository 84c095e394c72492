"""The lease on a real HA PostgreSQL: Patroni (PyPI, the `test` extra) with etcd (Debian
`etcd-server`), two PostgreSQL members (tests/harness/patroni.py), and a pair of real
supervisors with stand-in nodes reaching it the two ways users do: the libpq multi-host
URL with `target_session_attrs=read-write`, and HAProxy checking Patroni's REST API
`/primary` (docs/operations.md, "The lease database on Patroni").

Each fault runs with the pair running, the holder's node watched (tests/harness/watcher.py:
never two nodes) and every lease write a supervisor acted on audited against both
members (tests/harness/renewal_audit.py: no write acted on but lost):

- `patronictl switchover` at a timing whose slack W - M - U - G exceeds the switchover
  (Corda's U:W = 1:2, scaled: U = 8 s, W = 16 s, slack 5.9 s), timed so the holder's
  renewal falls due inside it: the running node is neither stopped nor moved;
- the same at the lab timing (U = 0.5 s, W = 2 s, slack 0.8 s, shorter than any
  switchover): exactly one node runs afterwards;
- the primary's postmaster SIGKILLed (Patroni fails over: `primary_start_timeout = 0`),
  with `synchronous_mode: true` and with asynchronous replication
  (`maximum_lag_on_failover` 1 MB), at the scaled timing: never two nodes, no lost
  write, and how long the pair had no node.

Every test also checks what the holder said at start about the database's protection
(`replication_protection`: synchronous, or asynchronous with a warning).

One Patroni cluster serves the module (tests/harness/patronipair.py, about 8 s to
build); each test first waits for it to be healthy in the replication mode it needs.
Skipped with the reason when patroni or etcd is missing. The other Patroni faults (etcd
lost, Patroni paused, a zone partition, HAProxy) are in tests/test_patroni_faults.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import patroni as pat
from tests.harness.bounds import within
from tests.harness.cluster import cluster
from tests.harness.loadprobe import LoadWatch
from tests.harness.patronipair import (
    LAB,
    SCALED,
    SCALED_SLACK,
    NoNodeMeter,
    fixture_patroni_cluster,  # noqa: F401 (the module's Patroni cluster)
    renewal_gap,
    set_synchronous,
    start_pair,
    wait_before_due,
)
from tests.harness.proc import wait_until
from tests.harness.watcher import Watcher

pytestmark = [pytest.mark.timeout(150)]


def run_fault(tmp_path: Path, lease_name: str, c: pat.PatroniCluster, load: LoadWatch, *,
              dsn: str, timing: dict[str, int], fault: str) -> dict[str, Any]:
    """The pair on `dsn`, then `fault` ("switchover" or "kill_postmaster") just before the
    holder's renewal is due; returns what happened (figures and the hosts' view)."""
    update_s, wait_s = timing["update_ms"] / 1000, timing["wait_ms"] / 1000
    with cluster(tmp_path, c.members[0].dsn, lease_name) as pair, Watcher(pair.hosts) as watch:
        pair.audit_dsns = c.dsns()
        a, b = start_pair(pair, dsn, timing)
        (node_a,) = a.live_nodes()
        protection = a.wait_event("replication_protection", 5)
        a.wait_event("lease_renewed", update_s + 10)
        old_primary = c.leader()
        other = next(m.name for m in c.members if m.name != old_primary)
        wait_before_due(a, update_s)
        fault_at = time.time()
        meter = NoNodeMeter(pair).__enter__()
        if fault == "switchover":
            outage = c.switchover(other)
        else:
            c.kill_postmaster(old_primary)
            t0 = time.monotonic()
            wait_until(lambda: c.member(other).api("/primary")[0] == 200, 60, interval=0.01,
                       message=f"{other} promoted")
            outage = time.monotonic() - t0
        # afterwards: one node, and (whoever holds it) renewing on the new primary
        settle = 3 * wait_s + within(0.0, load, floor=5.0)
        wait_until(lambda: sum(len(v) for v in pair.live().values()) == 1
                   and any(h.state() == "active" for h in (a, b)),
                   settle + outage, message="exactly one node after the fault")
        holder = pair.active(1)
        mark = holder.mark()
        holder.wait_event("lease_renewed", 2 * update_s + wait_s + 10, since=mark)
        kept = pair.live()["a"] == [node_a]
        meter.__exit__()
        # the old primary rejoins as a replica (pg_rewind) before the writes are audited
        # on both members
        c.wait_healthy(60)
        watch.assert_never_two()
    for h in (a, b):
        h.assert_no_errors()
    return {"protection": protection, "outage": outage, "kept": kept,
            "holder": holder.name, "gap": renewal_gap(a, fault_at),
            "no_node": meter.seconds, "longest_no_node": meter.longest,
            "lost": a.events("lease_lost"), "stopped": a.events("node_stopping")}


def report(name: str, r: dict[str, Any]) -> None:
    print(f"\n[{name}] patroni outage {r['outage']:.3f}s; a's longest renewal gap "
          f"{r['gap']:.3f}s; node kept: {r['kept']}; holder after: {r['holder']}; "
          f"no node for {r['no_node']:.3f}s (longest {r['longest_no_node']:.3f}s); "
          f"protection {r['protection']['protection']}")


def test_switchover_shorter_than_the_slack_neither_stops_nor_moves_the_node(
        tmp_path: Path, lease_name: str, patroni_cluster: pat.PatroniCluster,
        load: LoadWatch) -> None:
    set_synchronous(patroni_cluster, True)
    r = run_fault(tmp_path, lease_name, patroni_cluster, load,
                  dsn=patroni_cluster.multi_host_url(), timing=SCALED, fault="switchover")
    report("switchover, scaled", r)
    assert r["protection"]["protection"] == "synchronous", r["protection"]
    assert r["protection"]["level"] == "info"
    # `outage` runs from patronictl's start to the new primary's /primary answer (4-6 s
    # here); the write outage inside it is shorter: the renewal gap shows it
    assert r["gap"] - SCALED["update_ms"] / 1000 < SCALED_SLACK
    assert r["gap"] > SCALED["update_ms"] / 1000, "the renewal did not fall in the switchover"
    assert r["kept"] and r["holder"] == "a", r
    assert not r["lost"] and not r["stopped"], r
    assert r["no_node"] == 0.0


def test_switchover_longer_than_the_slack_leaves_exactly_one_node(
        tmp_path: Path, lease_name: str, patroni_cluster: pat.PatroniCluster,
        load: LoadWatch) -> None:
    set_synchronous(patroni_cluster, True)
    r = run_fault(tmp_path, lease_name, patroni_cluster, load,
                  dsn=patroni_cluster.multi_host_url(), timing=LAB, fault="switchover")
    report("switchover, lab", r)
    assert r["outage"] > 0.8, "the switchover fitted in the lab slack: no test"
    assert r["lost"] or r["stopped"], "a's node ran through a switchover longer than its slack"


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
def test_primary_postmaster_killed_fails_over_without_two_nodes(
        tmp_path: Path, lease_name: str, patroni_cluster: pat.PatroniCluster,
        load: LoadWatch, synchronous: bool) -> None:
    set_synchronous(patroni_cluster, synchronous)
    r = run_fault(tmp_path, lease_name, patroni_cluster, load,
                  dsn=patroni_cluster.multi_host_url(), timing=SCALED, fault="kill_postmaster")
    report(f"postmaster killed, {'sync' if synchronous else 'async'}", r)
    p = r["protection"]
    assert p["protection"] == ("synchronous" if synchronous else "asynchronous"), p
    assert p["level"] == ("info" if synchronous else "warning")
    assert p["two_nodes"] is (not synchronous)
    # the failover was shorter than the slack: the node ran through it, on a
    assert r["outage"] < SCALED_SLACK
    assert r["kept"] and r["holder"] == "a" and not r["lost"] and not r["stopped"], r
    assert r["no_node"] == 0.0
