"""A lossy database failover must not run two nodes: after another server answers,
nobody takes the lease before watching it for W.

The lease lives on a PostgreSQL primary with an asynchronous streaming replica
(`pg_basebackup -R`, tests/harness/pgserver.py `create_replica`) that streams through a
`FaultProxy`, so the test can make it miss writes on purpose. Each supervisor
reaches the database through one libpq multi-host URL
(`postgresql://127.0.0.1:P,127.0.0.1:R/postgres?target_session_attrs=read-write`),
where every address is a proxy of its own (2 hosts x 2 servers = 4 proxies), so one
host can be cut off from both servers ("its zone is down").

The scenario ("lossy handover"):

1. a holds the lease, b is standby; the replica has replayed everything.
2. Replication is cut (blackhole). `supervisor handover` moves the lease from a
   to b on the primary only: a stops its node, releases and cools down for 2 W;
   b acquires and runs its node. The replica still says "a holds it" (a's
   process, a's epoch).
3. b is cut off from both servers right after one of its renewals: its node runs
   on until b's own kill deadline, `W - M` after that renewal, as designed.
4. The primary stops (immediate) and the replica is promoted; a now reaches it.

Whatever a's supervisor sees on the promoted replica (its own process named
as holder, then a free row; or its own dead predecessor's row after a restart),
it must not start a node before b's node is surely dead: it has to notice that a
different server answers now and watch it for W first (docs/design.md, "The lease",
"Server identity"). The Watcher (samples every 5 ms) must see no overlap. Then b
is healed, and the pair must settle on exactly one node, with no traceback.

Variants: `cooldown` (a's supervisor kept running: its cooldown ends after the
failover), `restart_before` (a's supervisor SIGKILLed in its cooldown and
started again before the failover, as systemd would), `restart_after` (started
again only after the promotion: its first look at any server is the promoted
replica, so only something recorded with the row can tell it the row came from
another server).

On `main` before the server-identity fix every variant fails: two nodes ran for
about 1.1-1.3 s (`cooldown`) and 2.2-2.8 s (`restart_*`), also with the CPU busy.
Run alone: `python -m pytest tests/test_db_failover.py` (or `-m db_failover`).
Timing: U = 0.5 s, W = 4 s, stopTimeout S = 0.5 s, M = 0.4 s: b's cut-off node
gets SIGTERM W - M - S = 3.1 s after b's last renewal (SIGKILL at W - M), a window
wide enough that the overlap on `main` does not depend on the machine's load.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness import renewal_audit
from tests.harness.bounds import wait_within
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, cluster
from tests.harness.faultproxy import FaultProxy
from tests.harness.host import Host
from tests.harness.loadprobe import LoadWatch
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import ENV_DSN, PgServer
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = [pytest.mark.timeout(90), pytest.mark.db_failover]

U_MS, W_MS, S_MS = 500, 4000, 500
U, W = U_MS / 1000, W_MS / 1000
M = min(2.0, W / 10)  # default fencing margin
KILL_AFTER = W - M  # a cut-off holder's node dies this long after its last renewal
LEAD = 1.5  # cooldown variant: cut b this long before a's cooldown ends
TABLE = "corda_ha_lease"


@dataclass
class FailoverDb:
    """A primary, its streaming replica (through `replication`) and per-host proxies."""

    primary: PgServer
    replica: PgServer
    replication: FaultProxy
    proxies: list[FaultProxy] = field(default_factory=list)

    def host_url(self) -> tuple[str, FaultProxy, FaultProxy]:
        """A multi-host URL through two new proxies (to the primary, to the replica)."""
        to_primary = FaultProxy(self.primary.host, self.primary.port)
        self.proxies.append(to_primary)
        to_replica = FaultProxy(self.replica.host, self.replica.port)
        self.proxies.append(to_replica)
        url = (f"postgresql://postgres@127.0.0.1:{to_primary.port},127.0.0.1:{to_replica.port}"
               "/postgres?target_session_attrs=read-write")
        return url, to_primary, to_replica


@pytest.fixture
def db() -> Iterator[FailoverDb]:
    """Its own primary + replica (never the session's server); all destroyed after."""
    bindir = find_bindir()
    if bindir is None or not os.access(os.path.join(bindir, "pg_basebackup"), os.X_OK):
        if os.environ.get(ENV_DSN):
            pytest.skip("needs PostgreSQL server binaries incl. pg_basebackup to build a replica")
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are needed")
    primary = PgServer.create(bindir, replication=True)
    replica: PgServer | None = None
    replication = FaultProxy(primary.host, primary.port)
    made: FailoverDb | None = None
    try:
        replica = primary.create_replica(via=(replication.host, replication.port))
        made = FailoverDb(primary, replica, replication)
        yield made
    finally:
        for p in [replication, *(made.proxies if made else [])]:
            p.close()
        if replica is not None:
            replica.destroy()
        primary.destroy()


def lease_row(server: PgServer, lease_name: str) -> dict[str, Any] | None:
    """The lease row as `server` has it (a hot standby answers too), or None."""
    rows = server.execute(
        f"SELECT holder, holder_pid, instance, epoch, renewed_at FROM {TABLE}"
        " WHERE lease_name = %s", (lease_name,))
    if not rows:
        return None
    holder, pid, instance, epoch, renewed_at = rows[0]
    return {"holder": holder, "holder_pid": pid, "instance": instance, "epoch": epoch,
            "renewed_at": renewed_at}


def cut_after_renewal(server: PgServer, lease_name: str, holder: str,
                      cut: list[FaultProxy], not_before: float, timeout: float) -> float:
    """Blackhole `cut` right after `holder` has renewed (as seen on `server`), at the first
    renewal committed at or after monotonic `not_before`. Returns when the cut was made."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.dsn, autocommit=True, connect_timeout=5) as conn:
        last = None
        while True:
            row = conn.execute(f"SELECT holder, renewed_at FROM {TABLE} WHERE lease_name = %s",
                               (lease_name,)).fetchone()
            assert row is not None and row[0] == holder, f"{holder} does not hold it: {row}"
            now = time.monotonic()
            if last is not None and row[1] != last and now >= not_before:
                for p in cut:
                    p.set_mode("blackhole")
                return time.monotonic()
            assert now < deadline, f"no renewal by {holder} within {timeout}s"
            last = row[1]
            time.sleep(0.002)  # polling interval of the row, not a synchronisation


def mono_of(event: dict[str, Any]) -> float:
    """A log event's wall-clock timestamp, on our monotonic clock."""
    wall = datetime.fromisoformat(str(event["timestamp"])).timestamp()
    return time.monotonic() - (time.time() - wall)


def overlap_seconds(watch: Watcher) -> float:
    """Total time two nodes ran at once, as sampled (consecutive samples merged)."""
    if not watch.overlaps:
        return 0.0
    total, start, prev = 0.0, watch.overlaps[0][0], watch.overlaps[0][0]
    for t, _ in watch.overlaps[1:]:
        if t - prev > 10 * watch.interval:
            total += prev - start + watch.interval
            start = t
        prev = t
    return total + prev - start + watch.interval


def add_host(c: Cluster, db: FailoverDb, name: str) -> tuple[Host, FaultProxy, FaultProxy]:
    url, to_primary, to_replica = db.host_url()
    host = c.add(name, dsn=url, update_ms=U_MS, wait_ms=W_MS, stop_ms=S_MS)
    return host, to_primary, to_replica


def kill_supervisor(host: Host) -> None:
    """SIGKILL `host`'s supervisor; wait until everything it started is gone."""
    assert host.proc is not None
    host.signal(signal.SIGKILL)
    host.proc.wait(10)
    wait_until(lambda: not host.tree(), 5, message=f"{host.name}'s old processes to go")
    assert not host.live_nodes()


@pytest.mark.parametrize("variant", ["cooldown", "restart_before", "restart_after"])
def test_lossy_failover_never_runs_two_nodes(tmp_path: Path, lease_name: str, db: FailoverDb,
                                              variant: str, load: LoadWatch) -> None:
    t_start = time.monotonic()
    with cluster(tmp_path, db.primary.dsn, lease_name) as c, Watcher(c.hosts) as watch:
        c.audit_dsns = None  # the old primary is down at teardown: checked below
        a, _, _ = add_host(c, db, "a")
        b, b_p, b_r = add_host(c, db, "b")
        a.start()
        a.wait_event("node_started", 20)
        b.start()
        b.wait_event("lease_seen", 20, match=lambda e: e["holder"] == "a")
        epoch = int(a.wait_event("lease_acquired", 1)["epoch"])
        c.wait_member_ready("b")  # what `handover` checks first

        # 1. The replica has everything, then misses what follows.
        db.primary.wait_replayed(db.replica)
        db.replication.set_mode("blackhole")
        on_replica = lease_row(db.replica, lease_name)
        assert on_replica is not None and on_replica["holder"] == "a"

        # 2. Handover a -> b, on the primary only.
        mark_a, mark_b = a.mark(), b.mark()
        r = run_cli("handover", "--config", str(a.config_path), "--wait", "15", timeout=40)
        assert r.returncode == 0, (r.stdout, r.stderr)
        a.wait_event("lease_released", 5, since=mark_a, match=lambda e: e["epoch"] == epoch)
        cooldown = a.wait_event("cooldown_started", 5, since=mark_a)
        cooldown_end = mono_of(cooldown) + float(cooldown["seconds"])
        b.wait_event("lease_acquired", 5, since=mark_b, match=lambda e: e["epoch"] == epoch + 1)
        b.wait_event("node_started", 5, since=mark_b)
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=5.0, what="b's node record")
        (node_b,) = b.live_nodes()
        assert not a.live_nodes()
        on_primary = lease_row(db.primary, lease_name)
        on_replica = lease_row(db.replica, lease_name)
        assert on_primary is not None and on_primary["holder"] == "b", on_primary
        assert on_replica is not None and on_replica["holder"] == "a", on_replica
        assert on_replica["epoch"] == epoch

        not_before = time.monotonic()
        if variant == "cooldown":
            # a's cooldown must end after the failover, while b's node still runs
            assert cooldown_end - LEAD > time.monotonic(), "the handover took too long"
            not_before = cooldown_end - LEAD
        else:
            assert a.proc is not None and on_replica["holder_pid"] == a.proc.pid
            mark_a = a.mark()
            kill_supervisor(a)
            if variant == "restart_before":
                a.start()
                a.wait_event("lease_seen", 20, since=mark_a, match=lambda e: e["holder"] == "b")

        # 3. b's zone goes down (b keeps running, cut off), right after a renewal.
        cut_at = cut_after_renewal(db.primary, lease_name, "b", [b_p, b_r], not_before,
                                   timeout=max(10.0, not_before - time.monotonic() + 5))
        # 4. The primary dies; the replica (which still names a) is promoted.
        db.primary.stop("immediate")
        db.replica.promote()
        promoted_at = time.monotonic()
        if variant == "restart_after":
            a.start()  # its first look at any server: the promoted replica

        # b's node must die by its own deadline, whatever a does meanwhile.
        wait_until(lambda: not pid_alive(node_b), KILL_AFTER + 1.0, interval=0.005,
                   message="b's cut-off node to be killed by its deadline")
        node_b_dead = time.monotonic()
        assert b.proc is not None and b.proc.poll() is None, "b's supervisor keeps running"

        # 5. Heal b: the pair settles on exactly one node, the other host standing by.
        b_p.set_mode("pass")
        b_r.set_mode("pass")
        healed = time.monotonic()

        def settled() -> bool:
            states = sorted(str(h.state()) for h in (a, b))
            return sum(len(v) for v in c.live().values()) == 1 and states in (
                ["active", "standby"], ["active", "cooldown"])

        wait_until(settled, 3 * W + 5, message="exactly one node after healing b")
        settled_after = time.monotonic() - healed
        active = c.active(1)
        assert active.state() == "active"
    for host in (a, b):
        host.assert_no_errors()
    # Every write a supervisor acted on was committed on one of the two servers: the
    # old primary (every supervisor is gone now, so starting it again is safe) or the
    # promoted replica.
    db.primary.start()
    lost = renewal_audit.violations([db.primary.dsn, db.replica.dsn], lease_name,
                                    {h.name: list(h.lines) for h in (a, b)})
    assert not lost, lost

    a_node_starts = [r["start"] for r in a.node_records() if r["start"] > cut_at]
    first_a = min(a_node_starts) if a_node_starts else None
    overlap = overlap_seconds(watch)
    print(f"\n[{variant}] b cut at +{cut_at - t_start:.3f}s; promoted {promoted_at - cut_at:.3f}s "
          f"after the cut; b's node dead {node_b_dead - cut_at:.3f}s after the cut "
          f"(deadline W - M = {KILL_AFTER:.1f}s); a's next node started "
          f"{'never' if first_a is None else f'{first_a - cut_at:.3f}s'} after the cut; "
          f"one node ({active.name}'s) {settled_after:.3f}s after healing b; "
          f"overlap {overlap:.3f}s ({len(watch.overlaps)} samples)")
    shown = ("lease_", "node_started", "cooldown")
    print(f"[{variant}] a after the cut: " + ", ".join(
        str(e["event"]) for e in a.lines
        if "timestamp" in e and mono_of(e) >= cut_at and str(e["event"]).startswith(shown)))
    assert watch.samples > 0
    assert overlap == 0.0, (
        f"two nodes ran at once for {overlap:.3f}s after the failover: {watch.overlaps[:2]}")
