"""End-to-end harness: hosts sharing one lease (`Cluster`), started and torn down
together. `close()` kills everything the hosts started (found by their environment tag,
in rounds), removes the run cgroups they left and checks the invariant of every
end-to-end run: each lease write a supervisor acted on was committed
(tests/harness/renewal_audit.py).

The hosts are tests/harness/host.py's; the overlap watcher is tests/harness/watcher.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from supervisor.node import cgroup as cgroups
from supervisor.node.sweep import node_key
from tests.harness import renewal_audit
from tests.harness.host import EditedHost, Host
from tests.harness.proc import wait_until

#: "1": `Cluster.close` first SIGTERMs every supervisor still running and waits for it,
#: so that processes measured by coverage write their data (tests/coverage_report.py).
GRACEFUL_TEARDOWN_ENV = "CORDA_HA_TEST_GRACEFUL_TEARDOWN"


class Cluster:
    """Hosts sharing one lease; `close()` kills everything they started."""

    def __init__(self, root: Path, dsn: str, lease_name: str) -> None:
        self.root = root
        self.dsn = dsn
        self.lease_name = lease_name
        self.hosts: list[Host] = []
        # where the lease writes are audited (tests/harness/renewal_audit.py): every server
        # that may have answered the lease statements; None: the owner checks it
        # itself (the chaos suite, episode by episode)
        self.audit_dsns: list[str] | None = [dsn]

    def add(self, name: str, node_args: list[str] | None = None, **kw: Any) -> Host:
        kw.setdefault("dsn", self.dsn)
        host = Host(name=name, root=self.root / name, lease_name=self.lease_name,
                    tag=f"{name}-{uuid.uuid4().hex}", node_args=node_args or [], **kw)
        self.hosts.append(host)
        return host

    def wait_member_ready(self, name: str, timeout: float = 10.0,
                          table: str = "corda_ha_lease") -> None:
        """Wait until host `name`'s member row says it could take over (what
        `handover` checks before it asks the holder to step down)."""
        import psycopg

        def ready() -> bool:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT bool_or(can_take_over AND last_seen > clock_timestamp() - "
                    f"interval '5 seconds') FROM {table}_member "
                    "WHERE lease_name = %s AND machine_name = %s",
                    (self.lease_name, name)).fetchone()
            return bool(row and row[0])

        wait_until(ready, timeout, interval=0.05, message=f"{name} ready to take over")

    def live(self) -> dict[str, list[int]]:
        return {h.name: h.live_nodes() for h in self.hosts}

    def active(self, timeout: float) -> Host:
        """Wait until exactly one host has a live node; return it. A host restarted
        under a new supervisor (`add` with the same name) is one host: its directory
        and node records are shared, and the latest process answers for it."""
        found: list[Host] = []

        def one() -> bool:
            by_dir = {h.records: h for h in self.hosts}  # the latest per directory
            found[:] = [h for h in by_dir.values() if h.live_nodes()]
            return len(found) == 1

        wait_until(one, timeout, message="exactly one live node")
        return found[0]

    def close(self) -> None:
        if os.environ.get(GRACEFUL_TEARDOWN_ENV) == "1":
            self._stop_gracefully()
        for host in self.hosts:
            host.reading.set()  # let the reader drain to EOF
            # In rounds: a process forked between one snapshot and the kills (a node the
            # guard was just starting, a hook) is caught by the next round.
            for _ in range(5):
                procs = host.tree()
                if not procs:
                    break
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        p.resume()
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                psutil.wait_procs(procs, timeout=5)
            if host.proc is not None:
                with contextlib.suppress(Exception):
                    host.proc.kill()
                with contextlib.suppress(Exception):
                    host.proc.wait(5)
        for host in self.hosts:
            left = host.tree()
            assert not left, f"{host.name}: processes survived teardown: {left}"
        for host in self.hosts:
            remove_node_cgroups(host)
        self.assert_renewals_committed()

    def assert_renewals_committed(self) -> None:
        """The invariant of every end-to-end run: each acquisition and renewal a
        supervisor acted on was committed (tests/harness/renewal_audit.py)."""
        if self.audit_dsns is None:
            return
        lost: list[str] = []
        for lease in {h.lease_name for h in self.hosts}:
            lost += renewal_audit.violations(
                self.audit_dsns, lease,
                {h.name: list(h.lines) for h in self.hosts if h.lease_name == lease})
        assert not lost, f"lease writes acted on but not committed: {lost[:5]}"

    def _stop_gracefully(self, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT) every supervisor still running; wait for them, bounded.
        Whatever is left is SIGKILLed by `close` as always."""
        running = [h for h in self.hosts if h.proc is not None and h.proc.poll() is None
                   and not h.pid_namespace]
        for host in running:
            host.reading.set()
            for p in host.tree():
                with contextlib.suppress(psutil.Error):
                    p.resume()
            assert host.proc is not None
            with contextlib.suppress(OSError):
                os.kill(host.proc.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for host in running:
            assert host.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.proc.wait(max(0.0, end - time.monotonic()))


def host_node_key(host: Host) -> str:
    """The node key a host's supervisor uses (see supervisor.node.sweep.node_key)."""
    return node_key(host.lease_name, host.machine_name or host.name, str(host.root))


def remove_node_cgroups(host: Host) -> None:
    """Remove the run cgroups a host's supervisor left (it was SIGKILLed, say)."""
    parent = cgroups.own_cgroup_dir()  # the supervisors' node.cgroup = auto parent
    if parent is None:
        return
    for path in cgroups.leftovers(parent, host_node_key(host)):
        with contextlib.suppress(OSError):
            cgroups.kill_and_remove(path, 5.0)


@contextlib.contextmanager
def cluster(root: Path, dsn: str, lease_name: str) -> Iterator[Cluster]:
    c = Cluster(root, dsn, lease_name)
    try:
        yield c
    finally:
        c.close()


def start_pair(c: Cluster, b_args: list[str] | None = None,
               a_args: list[str] | None = None, **kw: Any) -> tuple[Host, Host]:
    """Start a, wait until it is active, then start b (standby). `kw` goes to both
    hosts (e.g. update_ms, wait_ms, stop_ms)."""
    a = c.add("a", a_args, **kw)
    b = c.add("b", b_args, **kw)
    a.start()
    a.wait_node_up(15)
    b.start()
    # b has read the row (held by a) at least once
    b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    return a, b


def add_edited(c: Cluster, name: str, edit: Callable[[str], str],
               node_args: list[str] | None = None, **kw: Any) -> EditedHost:
    """Like `Cluster.add`, but the host's config is rewritten by `edit`."""
    kw.setdefault("dsn", c.dsn)
    host = EditedHost(name=name, root=c.root / name, lease_name=c.lease_name,
                      tag=f"{name}-{uuid.uuid4().hex}", node_args=node_args or [], edit=edit,
                      **kw)
    c.hosts.append(host)
    return host


def holder_registered(c: Cluster, name: str = "a") -> Host:
    """Start host `name`, wait for its node, and for `status --json` to list it as a
    member (what `handover` reads before it asks anything)."""
    import json

    from tests.harness.cli import run_cli

    host = c.add(name)
    host.start()
    host.wait_node_up(15)
    wait_until(lambda: json.loads(run_cli("status", "--json", "--config",
                                          str(host.config_path)).stdout)["members"], 10,
               message=f"{name} registered as a member")
    return host
