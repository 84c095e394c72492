"""The chaos suite on Patroni (`python -m tests.chaos --patroni`): the lease database is a
throwaway Patroni cluster (tests/harness/patroni.py: etcd and two PostgreSQL members,
`synchronous_mode: true`, every path between the members through a fault proxy), and
the Patroni faults join the catalog. Without the flag nothing here runs: the CI short
run (tests/chaos/test_chaos_short.py) stays as it was.

`PatroniChaosDb` offers what the runner, the faults and the nodes' writes ask of
tests/chaos/db.py's `ChaosDb`: each host reaches the members through proxies of its own
(`link`, one per member) in a multi-host URL with `target_session_attrs=read-write`
(`host_dsn`); `server` is the member Patroni names the primary now. It has no
hand-made replica and no libfaketime, so `lossy_failover` and `clock_jump` are skipped,
and the faults that stop the server themselves (`pg_restart_*`) too: Patroni owns it.

The Patroni faults (tests/harness/patroni_faults.py), each with the database counted
unhealthy while no member is read-write for the hosts:

- `patroni_switchover`: `patronictl switchover` to the replica;
- `patroni_failover`: the primary's postmaster SIGKILLed (Patroni fails over);
- `patroni_etcd_frozen`: etcd SIGSTOPped ttl + 2 .. ttl + 6 s: the primary demotes
  itself, no member is read-write until etcd is back; the holder loses the lease;
- `patroni_paused_restart`: `patronictl pause`, the primary restarted by hand
  (`pg_ctl restart`, or its postmaster killed and started again), `resume`;
- `patroni_partition`: the active host and the primary on one side, every other host,
  the replica and etcd on the other, with Patroni alive on the old primary or frozen
  there (`variant`), until another host runs a node (or 2 ttl), then healed. The
  hosts' URLs name the members in one order, so when the old primary is named first
  the other side spends every connection's `connect_timeout` on it and reaches no
  member (docs/failure-behaviour.md): `moved_after_s` is then None and the episode
  checks safety alone.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import TYPE_CHECKING

import psutil

from tests.chaos.db import CORDA_TABLE_DDL, HostLink
from tests.chaos.episode import FaultSpec, HolderLost, Injected
from tests.chaos.episode import now as _now
from tests.harness import patroni as pat
from tests.harness import patroni_faults as pf
from tests.harness.faultproxy import FaultProxy
from tests.harness.host import Host
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import INSTALL_HINT, PgServer, PgServerError
from tests.harness.proc import wait_until

if TYPE_CHECKING:
    from tests.chaos.runner import ChaosCluster

TTL = 20.0  # the harness's Patroni ttl


class PatroniChaosDb:
    """See the module docstring."""

    faketime: str | None = None
    replica: PgServer | None = None
    replication: FaultProxy | None = None
    offset = 0.0

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise PgServerError(INSTALL_HINT)
        problem = pat.missing()
        if problem is not None:
            raise PgServerError(problem)
        self.c = pat.PatroniCluster.create(bindir, synchronous=True, proxied=True)
        self.links: list[HostLink] = []
        self.promoted_at: list[float] = []  # synchronous: no promotion may lose a write
        self.failovers = 0
        self.frozen: list[object] = []
        self.server.execute(CORDA_TABLE_DDL)
        self.server.execute("INSERT INTO node_mutual_exclusion VALUES ('X', 'nobody', '1', "
                            "now() - interval '1 hour', 1)")

    @property
    def server(self) -> PgServer:
        """The member that is the primary now (waits up to 60 s for there to be one)."""
        found: list[str] = []

        def one() -> bool:
            found[:] = [m.name for m in self.c.members if m.api("/primary")[0] == 200]
            return len(found) == 1

        wait_until(one, 60, interval=0.1, message="one Patroni primary")
        return PgServer(self.c.member(found[0]).dsn)

    @property
    def dsn(self) -> str:
        return self.server.dsn

    def link(self) -> HostLink:
        link = HostLink([FaultProxy("127.0.0.1", m.pg_port) for m in self.c.members])
        self.links.append(link)
        return link

    def host_dsn(self, link: HostLink) -> str:
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in link.proxies)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def promote(self) -> None:
        raise RuntimeError("Patroni promotes, not the chaos suite")

    def reseed(self, timeout: float = 60.0) -> float:
        raise RuntimeError("Patroni rebuilds its replicas")

    def jump(self, seconds: float) -> None:
        raise RuntimeError("no libfaketime under Patroni")

    def clock_offset(self) -> float:
        return 0.0

    def lease_back(self, lease_name: str, seconds: float) -> int:
        rows = self.server.execute(
            "UPDATE corda_ha_lease SET renewed_at = renewed_at - make_interval(secs => %s),"
            " expires_at = expires_at - make_interval(secs => %s) WHERE lease_name = %s"
            " RETURNING epoch", (seconds, seconds, lease_name))
        return len(rows)

    def lease_holder(self, lease_name: str) -> str | None:
        rows = self.server.execute(
            "SELECT holder FROM corda_ha_lease WHERE lease_name = %s", (lease_name,))
        return None if not rows else rows[0][0]

    def ensure_up(self) -> None:
        """Undo whatever a fault left: etcd and Patroni thawed, every path open."""
        pf.thaw_etcd(self.c)
        for p in tagged_patroni(self.c):
            with contextlib.suppress(Exception):
                p.resume()
        for links in self.c.links.values():
            for proxy in links.all():
                if proxy.mode != "pass":  # what the cut held is reset (see Zones.heal)
                    proxy.set_mode("reset")
                    proxy.set_mode("pass")
        with contextlib.suppress(AssertionError):
            self.c.wait_healthy(60)

    def destroy(self) -> None:
        for link in self.links:
            link.close()
        self.c.destroy()


def tagged_patroni(c: pat.PatroniCluster) -> list[psutil.Process]:
    return [p for m in c.members for p in pf.patroni_daemon(c, m.name)]


def _writable_again(ch: ChaosCluster, timeout: float = 90.0) -> float:
    """Wait until one member is read-write and the cluster is healthy again; when the
    first was (monotonic)."""
    c = _db(ch).c
    wait_until(lambda: sum(pf.read_write(m.dsn) for m in c.members) == 1, timeout,
               interval=0.02, message="a Patroni primary again")
    back = _now()
    c.wait_healthy(timeout)
    return back


def _db(ch: ChaosCluster) -> PatroniChaosDb:
    assert isinstance(ch.db, PatroniChaosDb), "a Patroni fault needs --patroni"
    return ch.db


def _other(c: pat.PatroniCluster, primary: str) -> str:
    return next(m.name for m in c.members if m.name != primary)


def switchover(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    c = _db(ch).c
    primary = c.leader()
    t0 = _now()
    took = c.switchover(_other(c, primary))
    back = _writable_again(ch)
    return Injected("patroni_switchover", None, t0, back, unhealthy=[(t0, back)],
                    params={"switchover_s": round(took, 3), "from": primary})


def failover(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    c = _db(ch).c
    primary = c.leader()
    t0 = _now()
    c.kill_postmaster(primary)
    back = _writable_again(ch)
    return Injected("patroni_failover", None, t0, back, unhealthy=[(t0, back)],
                    params={"promoted_after_s": round(back - t0, 3), "from": primary})


def etcd_frozen(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    c = _db(ch).c
    hold = TTL + rng.uniform(2.0, 6.0)
    t0 = _now()
    pf.freeze_etcd(c)
    try:
        time.sleep(hold)
    finally:
        pf.thaw_etcd(c)
    back = _writable_again(ch)
    return Injected("patroni_etcd_frozen", active.name, t0, back, unhealthy=[(t0, back)],
                    holder_lost=HolderLost(active.name, t0, back),
                    params={"hold_s": round(hold, 3), "back_after_s": round(back - t0, 3)})


def paused_restart(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    c = _db(ch).c
    how = rng.choice(["restart", "kill"])
    primary = c.leader()
    pf.pause(c)
    try:
        t0 = _now()
        took = pf.restart_by_hand(c, primary, how)
        back = _now()
    finally:
        pf.resume(c)
    return Injected("patroni_paused_restart", None, t0, back, unhealthy=[(t0, back)],
                    params={"how": how, "restart_s": round(took, 3), "primary": primary})


def partition(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    db = _db(ch)
    c = db.c
    variant = rng.choice(["alive", "frozen"])
    primary = c.leader()
    other = _other(c, primary)
    proxies = {h.name: {m.name: ch.proxies[h.name].proxies[i] for i, m in enumerate(c.members)}
               for h in ch.hosts}
    zones = pf.Zones(c, members={primary: "A", other: "B"},
                     hosts={h.name: "A" if h is active else "B" for h in ch.hosts}, etcd="B",
                     proxies=proxies)
    others = [h for h in ch.hosts if h is not active]
    t0 = _now()
    frozen = pf.freeze_patroni(c, primary) if variant == "frozen" else []
    zones.split()
    moved = None
    try:
        with contextlib.suppress(AssertionError):
            wait_until(lambda: any(ch.node_pids(h) for h in others), 2 * TTL + 10,
                       interval=0.05, message="a node on the other side")
            moved = _now()
    finally:
        pf.thaw(frozen)
        zones.heal()
    t1 = _now()
    _writable_again(ch)
    return Injected("patroni_partition", active.name, t0, t1, unhealthy=[(t0, t1)],
                    holder_lost=HolderLost(active.name, t0, t1),
                    params={"variant": variant, "primary": primary,
                            "moved_after_s": None if moved is None else round(moved - t0, 3)})


SPECS = [
    FaultSpec("patroni_switchover", "patronictl switchover to the replica", switchover,
              needs_patroni=True),
    FaultSpec("patroni_failover", "the Patroni primary's postmaster SIGKILLed", failover,
              needs_patroni=True),
    FaultSpec("patroni_etcd_frozen", "etcd SIGSTOPped past Patroni's ttl: the primary "
              "demotes itself", etcd_frozen, needs_patroni=True),
    FaultSpec("patroni_paused_restart", "patronictl pause, the primary restarted by hand",
              paused_restart, needs_patroni=True),
    FaultSpec("patroni_partition", "active host and primary cut off from the rest and "
              "etcd, Patroni alive or frozen there", partition, needs_patroni=True),
]
