"""The lease on Patroni, the faults beyond a switchover and a killed postmaster
(tests/test_patroni.py): a pair of real supervisors with database fencing, nodes that
write as their own roles, the Watcher (never two nodes) and the renewal audit against
both members (tests/harness/patronipair.py `FencedPair`), on one proxied Patroni
cluster (tests/harness/patroni.py, tests/harness/patroni_faults.py):

- HAProxy in front of Patroni's REST API (`GET /primary`, the config of
  docs/operations.md) as the pair's way to the database: a switchover and a failover
  through it, at the scaled timing;
- etcd frozen past Patroni's `ttl`: the primary demotes itself, no member is
  read-write until etcd is back; the pair waits it out, one node after;
- `patronictl pause`, then the primary restarted by hand (`pg_ctl restart`, or its
  postmaster SIGKILLed and started again): no failover, the node kept;
- a zone partition: host a with the primary on one side, host b with the replica and
  etcd on the other, with Patroni alive on the old primary (it demotes it) and frozen
  there (a zombie primary that still takes writes), in synchronous and asynchronous
  mode. Only the zombie with asynchronous replication runs two nodes: the test shows
  it (the hole synchronous mode closes) instead of failing on it.

What the partition found: a multi-host URL whose first host is silent kept the
supervisor from ever reaching the second (a call, its connect included, was bounded by
operationTimeout; libpq waits connectTimeout per host). Connecting has a budget of its
own now (supervisor/lease/connects.py); tests/test_multihost_url.py shows it.

Each test prints how long the pair had no node. Availability bounds come from the
`load` fixture; the safety checks are exact.

The default run keeps one variant of each fault (the failover through HAProxy, the
postmaster killed while paused, the partition with Patroni frozen and synchronous
replication: about 2 min 15 s added to the suite with two workers);
`CORDA_HA_TEST_PATRONI_ALL=1` runs the other variants too (skipped otherwise, saying
so), and `python -m tests.chaos --patroni` runs every Patroni fault type as chaos
episodes (docs/testing.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness import patroni_faults as pf
from tests.harness import renewal_audit
from tests.harness.bounds import within
from tests.harness.loadprobe import LoadWatch
from tests.harness.patroni import PatroniCluster
from tests.harness.patronipair import (
    BEFORE_DUE,
    SCALED,
    SCALED_SLACK,
    SMALL,
    FencedPair,
    NoNodeMeter,
    fixture_patroni_proxied,  # noqa: F401 (the module's Patroni cluster)
    last_renewal,
    make_cluster,
    one_node,
    set_synchronous,
    wait_before_due,
)
from tests.harness.proc import Reaper, wait_until

pytestmark = [pytest.mark.timeout(240)]

TTL = 20.0  # the harness's Patroni ttl (tests/harness/patroni.py `_dcs`)

#: the variants beyond the default run's one per fault (see the module docstring)
FULL_SET = pytest.mark.skipif(
    os.environ.get("CORDA_HA_TEST_PATRONI_ALL") != "1",
    reason="a further variant of a Patroni fault the default run covers once: "
           "CORDA_HA_TEST_PATRONI_ALL=1 runs it (docs/testing.md)")


def secs(timing: dict[str, int], key: str) -> float:
    return timing[key] / 1000


def writable(c: PatroniCluster) -> list[str]:
    return [m.name for m in c.members if pf.read_write(m.dsn)]


def through(fp: FencedPair, load: LoadWatch, inject: Callable[[], float]) -> dict[str, Any]:
    """Run `inject` (the fault; it returns the monotonic time the database was writable
    again) just before a's renewal falls due; then wait for exactly one node within the
    bound after that, and for the cluster to be healthy. What happened."""
    u, w = secs(fp.timing, "update_ms"), secs(fp.timing, "wait_ms")
    a = fp.hosts["a"]
    (node_a,) = a.live_nodes()
    protection = a.wait_event("replication_protection", 5)
    if last_renewal(a) + u - BEFORE_DUE - time.time() < 0.5:  # too close: the next one
        a.wait_event("lease_renewed", u + 10, since=a.mark())
    wait_before_due(a, u)
    started = time.monotonic()
    with NoNodeMeter(fp.pair) as meter:
        back = inject()
        # back on a writable server: a holder renews, or (its node stopped) a standby
        # watches the server for W, takes the lease and starts its node
        bound = within(2 * w + u, load, floor=5.0)
        wait_until(lambda: one_node(fp.pair), max(0.0, back + bound - time.monotonic()) + 0.5,
                   message=f"exactly one node within {bound:.1f}s of the database's return")
        holder = fp.pair.active(1)
        holder.wait_event("lease_renewed", 2 * u + w + 10, since=holder.mark())
    fp.c.wait_healthy(90)
    kept = fp.pair.live()["a"] == [node_a]
    late = fp.late_writes(holder.name, "a" if holder.name == "b" else "b")
    return {"protection": protection["protection"], "kept": kept, "holder": holder.name,
            "outage": back - started, "no_node": meter.seconds, "longest": meter.longest,
            "two": meter.two, "late": late[0], "new_writes": late[1],
            "lost": a.events("lease_lost"), "stopped": a.events("node_stopping")}


def audit(c: PatroniCluster, fp: FencedPair) -> list[str]:
    """The renewal audit on every member (`renewal_audit.violations`). Patroni may restart
    the rewound old primary once more after the cluster looked healthy: a member that
    refuses connections meanwhile is waited for (the cluster healthy again), not failed on."""
    found: list[list[str]] = []

    def audited() -> bool:
        try:
            found.append(renewal_audit.violations(
                c.dsns(), fp.lease_name, {h.name: list(h.lines) for h in fp.pair.hosts}))
        except psycopg.OperationalError:
            c.wait_healthy(60)
            return False
        return True

    wait_until(audited, 90, interval=0.2, message="every member answering the audit")
    return found[0]


def report(name: str, r: dict[str, Any]) -> None:
    print(f"\n[{name}] database not writable for {r['outage']:.1f}s; no node for "
          f"{r['no_node']:.3f}s (longest {r['longest']:.3f}s); node kept: {r['kept']}; "
          f"holder after: {r['holder']}; late writes {r['late']}; "
          f"protection {r['protection']}")


@pytest.fixture
def fenced(tmp_path: Path, lease_name: str) -> Iterator[Callable[..., FencedPair]]:
    """A factory of the fenced pair on a cluster; each closed after the test."""
    made: list[FencedPair] = []

    def make(c: PatroniCluster, urls: dict[str, str], timing: dict[str, int]) -> FencedPair:
        fp = FencedPair(tmp_path, lease_name, c, urls, timing).__enter__()
        made.append(fp)
        return fp

    try:
        yield make
    finally:
        for fp in made:
            fp.close()


def multi_host(c: PatroniCluster) -> dict[str, str]:
    url = c.multi_host_url().replace("postgres@", "{user}@", 1)
    return {"a": url, "b": url}


# -- HAProxy --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [pytest.param("switchover", marks=FULL_SET),
                                   "kill_postmaster"])
def test_through_haproxy_a_switchover_or_failover_never_runs_two_nodes(
        tmp_path: Path, patroni_proxied: PatroniCluster, fenced: Callable[..., FencedPair],
        load: LoadWatch, reaper: Reaper, fault: str) -> None:
    c = patroni_proxied
    set_synchronous(c, True)
    lb = pf.PatroniHaProxy(tmp_path / "haproxy", c, reaper=reaper)
    lb.start()
    try:
        old = c.leader()
        assert lb.up() == [old], lb.server_states(lb.BACKEND)
        url = lb.dsn("{user}")
        fp = fenced(c, {"a": url, "b": url}, SCALED)
        other = next(m.name for m in c.members if m.name != old)

        def inject() -> float:
            if fault == "switchover":
                c.switchover(other)
            else:
                c.kill_postmaster(old)
            wait_until(lambda: lb.up() == [other], 60, interval=0.01,
                       message=f"haproxy routing to {other} alone")
            return time.monotonic()

        r = through(fp, load, inject)
        report(f"haproxy, {fault}", r)
        fp.watch.assert_never_two()
        assert r["late"] == 0
        assert r["two"] == 0.0
    finally:
        lb.close()


# -- etcd lost ------------------------------------------------------------------------------


def test_etcd_frozen_past_ttl_the_pair_waits_it_out_with_one_node(
        patroni_proxied: PatroniCluster, fenced: Callable[..., FencedPair],
        load: LoadWatch) -> None:
    c = patroni_proxied
    set_synchronous(c, True)
    fp = fenced(c, multi_host(c), SMALL)
    seen: dict[str, float] = {}

    def inject() -> float:
        t0 = time.monotonic()
        pf.freeze_etcd(c)
        try:
            wait_until(lambda: not writable(c), TTL + 10, interval=0.05,
                       message="the primary demoted (etcd unreachable)")
            seen["demoted_after"] = time.monotonic() - t0
            time.sleep(max(0.0, t0 + TTL + 5 - time.monotonic()))  # hold past ttl
        finally:
            pf.thaw_etcd(c)
        seen["frozen"] = time.monotonic() - t0
        wait_until(lambda: len(writable(c)) == 1, 60, interval=0.05,
                   message="a primary again once etcd is back")
        return time.monotonic()

    r = through(fp, load, inject)
    report("etcd frozen", r)
    print(f"  demoted {seen['demoted_after']:.1f}s after etcd froze; etcd frozen "
          f"{seen['frozen']:.1f}s")
    fp.watch.assert_never_two()
    assert r["late"] == 0
    # no writable database for longer than W: the holder's node stopped by its deadline
    assert r["outage"] > secs(SMALL, "wait_ms")
    assert r["lost"] or r["stopped"], "a's node ran through an outage longer than W"


# -- paused, restarted by hand ---------------------------------------------------------------


@pytest.mark.parametrize("how", [pytest.param("restart", marks=FULL_SET), "kill"])
def test_paused_primary_restarted_by_hand_keeps_the_node(
        patroni_proxied: PatroniCluster, fenced: Callable[..., FencedPair], load: LoadWatch,
        how: str) -> None:
    c = patroni_proxied
    set_synchronous(c, True)
    fp = fenced(c, multi_host(c), SCALED)
    old = c.leader()
    pf.pause(c)
    try:
        r = through(fp, load, lambda: (pf.restart_by_hand(c, old, how), time.monotonic())[1])
    finally:
        pf.resume(c)
    report(f"paused, {how} by hand", r)
    fp.watch.assert_never_two()
    assert c.leader() == old, "paused: no failover"
    assert r["outage"] < SCALED_SLACK, "the restart outlasted the slack: no test"
    assert r["kept"] and r["holder"] == "a" and not r["lost"] and not r["stopped"], r
    assert r["no_node"] == 0.0


# -- zone partition ----------------------------------------------------------------------------


@pytest.fixture
def zone_cluster(request: pytest.FixtureRequest) -> Iterator[PatroniCluster]:
    """A proxied cluster of its own, in the replication mode the test names: a partition
    leaves a rewound member behind, which the next test should not inherit."""
    yield from make_cluster(True, synchronous=bool(request.param))


@pytest.mark.parametrize(("patroni", "zone_cluster"), [
    pytest.param("alive", True, id="alive-synchronous", marks=FULL_SET),
    pytest.param("alive", False, id="alive-asynchronous", marks=FULL_SET),
    pytest.param("frozen", True, id="frozen-synchronous"),
    pytest.param("frozen", False, id="frozen-asynchronous", marks=FULL_SET),
], indirect=["zone_cluster"])
def test_zone_partition(zone_cluster: PatroniCluster, fenced: Callable[..., FencedPair],
                        load: LoadWatch, patroni: str) -> None:
    """Host a and the primary on one side, host b, the replica and etcd on the other.
    One node, except with Patroni frozen on the old primary and asynchronous
    replication: that zombie takes a's renewals, b's side promotes the replica after
    ttl, b takes the lease W later, and both nodes run (shown, not failed on).
    Asynchronous, the old primary's last acknowledged renewals are lost (counted)."""
    c = zone_cluster
    synchronous = c.synchronous
    old = c.leader()
    other = next(m.name for m in c.members if m.name != old)
    with pf.Zones(c, members={old: "A", other: "B"}, hosts={"a": "A", "b": "B"},
                  etcd="B") as zones:
        fp = fenced(c, {h: zones.dsn(h, "{user}") for h in ("a", "b")}, SMALL)
        b = fp.hosts["b"]
        zombie = patroni == "frozen" and not synchronous
        w = secs(SMALL, "wait_ms")
        frozen: list[Any] = []

        def inject() -> float:
            mark = b.mark()
            if patroni == "frozen":
                frozen[:] = pf.freeze_patroni(c, old)
            zones.split()
            try:
                # b's side: the replica promoted once the leader key expired, then b's
                # node after W on it
                try:
                    b.wait_node_up(TTL + w + within(10.0, load, floor=10.0), since=mark)
                except AssertionError as e:
                    raise AssertionError(f"{e}\n{c.log_tail(100)}") from None
                if zombie:
                    wait_until(lambda: fp.pair.live()["a"] and fp.pair.live()["b"], 5,
                               message="the zombie's node and b's at once")
            finally:
                pf.thaw(frozen)
                zones.heal()
            return time.monotonic()

        if not synchronous:
            fp.pair.audit_dsns = None  # the old primary's last writes are lost: below
        r = through(fp, load, inject)
        report(f"partition, Patroni {patroni}, {'sync' if synchronous else 'async'}", r)
        assert r["holder"] == "b"
        assert r["protection"] == ("synchronous" if synchronous else "asynchronous")
        lost = audit(c, fp)
        print(f"  two nodes for {r['two']:.3f}s; {len(lost)} acknowledged renewals lost")
        if not zombie:
            fp.watch.assert_never_two()
            assert r["late"] == 0
            assert synchronous or not lost or all(v.startswith("a:") for v in lost), lost
            return
        # the hole: two nodes, and a's renewals acknowledged by the zombie, lost
        assert fp.watch.exact_overlaps() or fp.watch.overlaps, "no overlap: no zombie?"
        assert lost, "the zombie's acknowledged renewals were not lost"


# -- the chaos suite ---------------------------------------------------------------------------


def test_the_patroni_chaos_faults_run_only_behind_the_flag() -> None:
    """`python -m tests.chaos --patroni` adds them; the CI short run's catalog (no flag)
    has none of them, and a Patroni run skips the faults that stop the server itself."""
    from tests.chaos.faults import catalog
    from tests.chaos.profile import PROFILES

    plain, flagged = catalog(PROFILES["lab"]), catalog(PROFILES["lab"], patroni=True)
    patroni = {n for n, spec in flagged.items() if spec.needs_patroni}
    assert patroni == {"patroni_switchover", "patroni_failover", "patroni_etcd_frozen",
                       "patroni_paused_restart", "patroni_partition"}
    assert not patroni & set(plain) and not any(s.needs_patroni for s in plain.values())
    assert {n for n, s in plain.items() if s.needs_own_server} == {
        "pg_restart_fast", "pg_restart_immediate"}

