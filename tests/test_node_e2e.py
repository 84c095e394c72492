"""A stop is over when the last process of the run is gone, end to end.

Two hosts, `node.cgroup = off` (no cgroup holds the run). The node is a wrapper
shell whose stand-in node runs as a `setsid` child: out of the node's process group
and session, so neither the guard's killpg nor PR_SET_PDEATHSIG reaches it, and a
SIGTERM to the node ends only the shell. On a handover, the old host must kill that
child (its environment marker) before it reports the exit and releases the lease:
the child is dead before the other host's node starts, and the watcher never sees
two nodes. When the child cannot die yet (frozen by the cgroup v1 freezer: state D),
the old host keeps the lease, renewing it, and the other host starts nothing until
the child is gone.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, add_edited
from tests.harness.freezer import frozen
from tests.harness.host import EditedHost
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(120)


def setsid_wrapper(records: Path, lock: Path) -> Callable[[str], str]:
    """Config edit: the node is `sh -c 'setsid <stand-in> & wait'`, and no cgroup."""
    def edit(text: str) -> str:
        script = (f"setsid {sys.executable} {FAKE_NODE} --record {records} --lock {lock} & "
                  "wait")
        out = []
        for line in text.splitlines(keepends=True):
            if line.strip().startswith("command = "):
                line = f"  command = {json.dumps(['/bin/sh', '-c', script])}\n"
            out.append(line)
        return "".join(out) + "\nnode.cgroup = off\n"
    return edit


class DeathClock:
    """The monotonic time at which a process (not our child) ended, from its pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.at: float | None = None
        self._fd = os.pidfd_open(pid)
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            while not poller.poll(1000):
                pass
            self.at = time.monotonic()
        finally:
            os.close(self._fd)


def start_setsid_pair(pair: Cluster) -> tuple[EditedHost, EditedHost, int]:
    """a active, b ready to take over; a's stand-in (its setsid child)."""
    a: EditedHost = add_edited(pair, "a", setsid_wrapper(pair.root / "a" / "records",
                                                         pair.root / "nodes.lock"))
    b: EditedHost = add_edited(pair, "b", setsid_wrapper(pair.root / "b" / "records",
                                                         pair.root / "nodes.lock"))
    a.start()
    leader = int(a.wait_event("node_started", 15)["pid"])
    wait_until(lambda: len(a.live_nodes()) == 1, 10, message="a's stand-in running")
    (child,) = a.live_nodes()
    assert child != leader and os.getsid(child) == child, "the stand-in left the session"
    b.start()
    b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    pair.wait_member_ready("b")
    return a, b, child


def test_a_setsid_child_dies_before_the_other_host_starts_its_node(pair: Cluster) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, child = start_setsid_pair(pair)
        watch.hosts = pair.hosts
        clock = DeathClock(child)
        mark_a = a.mark()
        r = run_cli("handover", "--config", str(a.config_path), "--wait", "15", timeout=40)
        assert r.returncode == 0, (r.stdout, r.stderr)
        wait_until(lambda: len(b.live_nodes()) == 1, 10, message="b's stand-in running")
        (b_node,) = b.live_nodes()
        b_start = float(b.node_record(b_node)["start"])
        killed = a.wait_event("node_leftovers_killed", 5, since=mark_a)
        exited = a.wait_event("node_exited", 5, since=mark_a)
        released = a.wait_event("lease_released", 5, since=mark_a)
        assert child in killed["pids"], killed
        assert a.lines.index(killed) < a.lines.index(exited) < a.lines.index(released)
        wait_until(lambda: clock.at is not None, 5, message="a's setsid child dead")
        assert clock.at is not None
        print(f"a's setsid child died {(b_start - clock.at) * 1000:.0f} ms before b's node "
              f"wrote its start record")
        assert clock.at < b_start
        a.assert_no_errors(running=True)
        b.assert_no_errors(running=True)
    watch.assert_never_two()


def since(host: EditedHost, mark: int, name: str) -> list[dict[str, Any]]:
    with host.cond:
        return [e for e in host.lines[mark:] if e.get("event") == name]


def test_a_child_that_cannot_die_keeps_the_lease_and_the_other_host_waits(
        pair: Cluster) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, child = start_setsid_pair(pair)
        watch.hosts = pair.hosts
        leader = int(a.events("node_started")[-1]["pid"])
        clock = DeathClock(child)
        with frozen(child) as group:
            mark_a, mark_b = a.mark(), b.mark()
            r = run_cli("handover", "--config", str(a.config_path), timeout=40)
            assert r.returncode == 0, (r.stdout, r.stderr)
            wait_until(lambda: not pid_alive(leader), 10, message="a's leader gone (SIGTERM)")
            renewed = len(since(a, mark_a, "lease_renewed"))
            b.no_event("node_started", 3.0, since=mark_b)  # U = 0.5 s: six renewals due
            assert not since(a, mark_a, "node_exited") and not since(a, mark_a,
                                                                     "lease_released")
            assert len(since(a, mark_a, "lease_renewed")) >= renewed + 3, "a stopped renewing"
            assert clock.at is None
            t_thaw = time.monotonic()
            group.thaw()
            wait_until(lambda: len(b.live_nodes()) == 1, 15, message="b's stand-in running")
        (b_node,) = b.live_nodes()
        b_start = float(b.node_record(b_node)["start"])
        wait_until(lambda: clock.at is not None, 5, message="a's setsid child dead")
        assert clock.at is not None and t_thaw < clock.at < b_start
        a.wait_event("lease_released", 5, since=mark_a)
        print(f"frozen child: b waited; the child died {(clock.at - t_thaw) * 1000:.0f} ms "
              f"after the thaw, {(b_start - clock.at) * 1000:.0f} ms before b's node started")
    watch.assert_never_two()
