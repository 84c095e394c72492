"""A pair of real supervisors on a throwaway Patroni cluster (tests/harness/patroni.py):
what tests/test_patroni.py and tests/test_patroni_faults.py share.

- the timings: `SCALED` (Corda's U:W = 1:2 scaled until the holder's slack outlasts a
  Patroni switchover), `LAB` (tests/harness/host.py's), `SMALL` (U = 2 s, W = 4 s:
  faults that last Patroni's `ttl` anyway);
- the module fixtures `patroni_cluster` (plain) and `patroni_proxied` (every path
  between the members through a fault proxy): a test module imports the `fixture_*`
  it uses;
- `set_synchronous` (Patroni's `synchronous_mode`, applied), `NoNodeMeter` (how long
  the pair ran no node), `renewal_gap`, `wait_before_due` (to put a fault where the
  holder's renewal falls due);
- `FencedPair`: the pair with database fencing as `schema` prints it (installed on the
  primary, replicated), supervisors logging in as their least-privilege role and nodes
  writing all the time as their own roles, each host over a URL of its own; watched
  (tests/harness/watcher.py) and every acted-on lease write audited on every member.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import db_writer, fencedb
from tests.harness import patroni as pat
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.host import Host
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import PgServer
from tests.harness.proc import wait_until
from tests.harness.watcher import Watcher

#: Corda's U:W = 1:2, scaled until the holder's slack outlasts a Patroni switchover:
#: M = 1.6 s, G = 0.5 s (stopTimeout), slack W - M - U - G = 5.9 s
SCALED = {"update_ms": 8000, "wait_ms": 16000, "stop_ms": 500}
SCALED_SLACK = 16 - 1.6 - 8 - 0.5
#: the lab timing (tests/harness/host.py): slack 2 - 0.2 - 0.5 - 0.5 = 0.8 s
LAB = {"update_ms": 500, "wait_ms": 2000, "stop_ms": 500}
#: Corda's ratio at a small scale, for faults that last Patroni's ttl (20 s) anyway
SMALL = {"update_ms": 2000, "wait_ms": 4000, "stop_ms": 500}
#: the fault starts this long before the holder's next renewal is due, so that the
#: renewal falls inside it
BEFORE_DUE = 0.8


def make_cluster(proxied: bool, synchronous: bool = True) -> Iterator[pat.PatroniCluster]:
    """A Patroni cluster for a fixture (skipped with the reason when patroni or etcd is
    missing), destroyed after it."""
    reason = pat.missing()
    if reason is not None:
        pytest.skip(reason)
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries are needed")
    c = pat.PatroniCluster.create(bindir, synchronous=synchronous, proxied=proxied)
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module", name="patroni_cluster")
def fixture_patroni_cluster() -> Iterator[pat.PatroniCluster]:
    """One Patroni cluster for the module (about 8 s to build); skipped with the reason
    when patroni or etcd is missing."""
    yield from make_cluster(False)


@pytest.fixture(scope="module", name="patroni_proxied")
def fixture_patroni_proxied() -> Iterator[pat.PatroniCluster]:
    """The same, every path between the members through a fault proxy."""
    yield from make_cluster(True)


def set_synchronous(c: pat.PatroniCluster, on: bool) -> None:
    """Patroni's `synchronous_mode` (dynamic: `patronictl edit-config`); returns once the
    cluster is healthy in that mode and the primary's synchronous_standby_names says so."""
    if c.synchronous != on:
        r = subprocess.run(
            [pat.PATRONICTL, "-c", str(c.members[0].config), "edit-config", pat.SCOPE,
             "--set", f"synchronous_mode={'true' if on else 'false'}", "--force"],
            capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        c.synchronous = on
    c.wait_healthy(60)

    def applied() -> bool:
        names = c.execute_on_primary("SHOW synchronous_standby_names")[0][0]
        return bool(names) == on

    wait_until(applied, 30, interval=0.1, message=f"synchronous_mode = {on} applied")


def wall(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def renewal_gap(host: Host, after: float) -> float:
    """The longest time between two successive successful renewals (or the acquisition)
    `host` logged, among those around wall-clock `after`."""
    times = sorted(wall(e) for e in host.lines
                   if e.get("event") in ("lease_renewed", "lease_acquired"))
    gaps = [b - a for a, b in itertools.pairwise(times) if b > after]
    return max(gaps, default=0.0)


def last_renewal(host: Host) -> float:
    """The wall time of `host`'s last successful renewal (or acquisition) it logged."""
    return max(wall(e) for e in host.lines
               if e.get("event") in ("lease_renewed", "lease_acquired"))


def wait_before_due(host: Host, update_s: float) -> float:
    """Block until `BEFORE_DUE` s before `host`'s next renewal falls due (positioning a
    fault in time, not synchronisation); the wall time of the renewal before."""
    last = last_renewal(host)
    due = last + update_s
    time.sleep(max(0.0, due - BEFORE_DUE - time.time()))
    return last


class NoNodeMeter:
    """Samples every 10 ms how many nodes the pair runs; `seconds` is the time with none
    (from the first sample on), `longest` the longest such stretch; `two` the time
    with two (measured, for the cases shown to run two; the Watcher is the check)."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.seconds = 0.0
        self.longest = 0.0
        self.two = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last, since = time.monotonic(), None
        while not self._stop.wait(0.01):
            now = time.monotonic()
            running = sum(len(v) for v in self.c.live().values())
            if running == 0:
                self.seconds += now - last
                since = last if since is None else since
                self.longest = max(self.longest, now - since)
            else:
                since = None
                if running > 1:
                    self.two += now - last
            last = now

    def __enter__(self) -> NoNodeMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def start_pair(c: Cluster, dsn: str, timing: dict[str, int]) -> tuple[Host, Host]:
    a = c.add("a", None, dsn=dsn, **timing)
    b = c.add("b", None, dsn=dsn, **timing)
    a.start()
    a.wait_node_up(30)
    b.start()
    b.wait_event("lease_seen", 30, match=lambda e: e["holder"] == "a")
    return a, b


def one_node(pair: Cluster) -> bool:
    """Exactly one node runs, and its host says it is active."""
    return (sum(len(v) for v in pair.live().values()) == 1
            and any(h.state() == "active" for h in pair.hosts))


@dataclass
class FencedPair:
    """The fenced pair on a Patroni cluster; see the module docstring. `urls` maps each
    host to its URL with `{user}` where the role goes."""

    tmp_path: Path
    lease_name: str
    c: pat.PatroniCluster
    urls: dict[str, str]
    timing: dict[str, int]
    pair: Cluster = field(init=False)
    watch: Watcher = field(init=False)
    fdb: fencedb.FenceDb = field(init=False)
    hosts: dict[str, Host] = field(default_factory=dict)

    def __enter__(self) -> FencedPair:
        primary = PgServer(self.c.member(self.c.leader()).dsn)
        self.fdb = fencedb.set_up(primary, self.tmp_path, lease_name=self.lease_name)
        self.pair = Cluster(self.tmp_path, self.c.members[0].dsn, self.lease_name)
        self.pair.audit_dsns = self.c.dsns()
        try:
            for name in ("a", "b"):
                self.hosts[name] = self._add(name)
            self.watch = Watcher(self.pair.hosts).__enter__()
            a, b = self.hosts["a"], self.hosts["b"]
            a.start()
            a.wait_node_up(30)
            b.start()
            b.wait_event("lease_seen", 30, match=lambda e: e["holder"] == "a")
            b.wait_event("fencing_ready", 30)
        except BaseException:
            self.close()
            raise
        return self

    def _add(self, name: str) -> Host:
        f = self.fdb
        conf = supervisor_config(
            database={"table": f.table, "ownerRole": f.owner},
            fencing={"nodeRole": f.node_role(name), "nodeGroup": f.group,
                     "fencerRole": f.fencer, "required": True})
        node_dsn = self.urls[name].format(user=f.node_role(name))
        return self.pair.add(name, ["--write", node_dsn, "--write-table", f.writes,
                                    "--write-log", str(self.tmp_path / f"{name}.writes")],
                             dsn=self.urls[name].format(user=f.supervisor), extra_conf=conf,
                             update_ms=self.timing["update_ms"],
                             wait_ms=self.timing["wait_ms"], stop_ms=self.timing["stop_ms"])

    def late_writes(self, new: str, old: str) -> tuple[int, int]:
        """Writes of `old`'s node committed after `new`'s node's first write, and `new`'s
        writes, on the primary now (tests/harness/db_writer.py)."""
        return db_writer.late_writes(self.c.member(self.c.leader()).dsn, self.fdb.writes,
                                     new, old)

    def close(self) -> None:
        """Stop the watcher and tear the hosts down (the teardown audits the writes)."""
        if hasattr(self, "watch"):
            self.watch.__exit__()
        self.pair.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
