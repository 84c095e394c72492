"""The overlap watcher can fail: it sees a 10 ms overlap injected on purpose, both by
sampling (from the second node's exec) and exactly (the node lock), and it reports
nothing when two nodes follow each other without overlapping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import nodescan
from tests.harness.host import Host
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(30)


def two_hosts(tmp_path: Path) -> tuple[Host, Host]:
    hosts = tuple(Host(name=n, root=tmp_path / n, dsn="", lease_name="w", tag=n) for n in "xy")
    for h in hosts:
        h.records.mkdir(parents=True)
    return hosts[0], hosts[1]


def node(reaper: Reaper, host: Host) -> subprocess.Popen[bytes]:
    return reaper.popen([sys.executable, FAKE_NODE, "--record", str(host.records),
                         "--lock", str(host.lock_path)], stdout=subprocess.DEVNULL)


def test_a_10ms_overlap_is_seen_by_sampling(tmp_path: Path, reaper: Reaper) -> None:
    x, y = two_hosts(tmp_path)
    with Watcher([x, y]) as watch:
        a = node(reaper, x)
        wait_until(lambda: x.live_nodes(), 10)
        b = node(reaper, y)
        wait_until(lambda: y.live_nodes(), 10, interval=0.001)  # b exists
        time.sleep(0.010)  # the injected overlap
        a.kill()
        a.wait(5)
        wait_until(lambda: y.node_records(), 10)
        b.terminate()
        b.wait(5)
        time.sleep(0.05)
    assert watch.samples > 0 and watch.longest_gap <= watch.max_gap
    assert watch.overlaps, "a 10 ms overlap went unseen"
    with pytest.raises(AssertionError, match="two nodes ran at once"):
        watch.assert_never_two()


def test_an_overlap_is_recorded_exactly_by_the_node_lock(tmp_path: Path,
                                                         reaper: Reaper) -> None:
    x, y = two_hosts(tmp_path)
    a = node(reaper, x)
    wait_until(lambda: x.node_records(), 10)
    b = node(reaper, y)
    wait_until(lambda: y.node_records(), 10)  # b tried the lock before its record
    a.kill()
    b.send_signal(signal.SIGTERM)
    a.wait(5)
    b.wait(5)
    watch = Watcher([x, y])
    (line,) = watch.exact_overlaps()
    pid, _, holder = line.split()
    assert (int(pid), int(holder)) == (b.pid, a.pid)


def test_nodes_that_follow_each_other_are_no_overlap(tmp_path: Path, reaper: Reaper) -> None:
    x, y = two_hosts(tmp_path)
    with Watcher([x, y]) as watch:
        for host in (x, y, x):
            p = node(reaper, host)
            wait_until(lambda h=host: h.node_records() and h.live_nodes(), 10)  # type: ignore[misc]
            p.send_signal(signal.SIGTERM)
            p.wait(5)
            for f in host.records.glob("*.json"):
                f.unlink()
    watch.assert_never_two()
    assert watch.samples > 10
    print(f"watcher: {watch.samples} samples, longest gap {watch.longest_gap * 1000:.1f} ms, "
          f"realtime={watch.realtime}, pid {os.getpid()}")


def test_the_scan_reads_command_lines_only_of_processes_named_as_a_node_can_be(
        tmp_path: Path, reaper: Reaper) -> None:
    """A process named otherwise (a PostgreSQL backend, a shell) is passed over without
    reading its command line (which waits for that process's memory-map lock); a
    stand-in node is still found, and an unreadable name counts as a possible node."""
    x, _ = two_hosts(tmp_path)
    shell = reaper.popen(["sh", "-c", "sleep 30"])
    a = node(reaper, x)
    wait_until(lambda: x.node_records(), 10)
    assert not nodescan._may_be_node(str(shell.pid))
    assert nodescan._may_be_node(str(a.pid))
    assert nodescan._may_be_node("999999999")  # gone or hidden: read on
    assert nodescan.scan_nodes({"x": str(x.records)}) == {"x": [a.pid]}


def _stalled(watch: Watcher, during: Callable[[], None]) -> None:
    """Freeze the sampling process while `during` runs, for longer than `max_gap`."""
    assert watch._proc is not None
    os.kill(watch._proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        during()
        time.sleep(max(0.0, 3 * watch.max_gap - (time.monotonic() - t0)))  # the stall
    finally:
        os.kill(watch._proc.pid, signal.SIGCONT)


def test_a_stall_across_a_change_of_nodes_fails(tmp_path: Path, reaper: Reaper) -> None:
    """One node goes and another comes while the sampler is frozen: their order is
    unknown, so the run fails though they never overlapped."""
    x, y = two_hosts(tmp_path)
    with Watcher([x, y]) as watch:
        a = node(reaper, x)
        wait_until(lambda: x.node_records() and x.live_nodes(), 10)

        def handover() -> None:
            a.send_signal(signal.SIGTERM)
            a.wait(5)
            node(reaper, y)
            wait_until(lambda: y.node_records(), 10)

        _stalled(watch, handover)
        samples = watch.samples
        wait_until(lambda: watch.samples > samples + 1, 10)
    assert not watch.exact_overlaps() and not watch.overlaps
    with pytest.raises(AssertionError, match="stalled while the nodes changed"):
        watch.assert_never_two()


def test_a_stall_while_one_node_runs_on_is_counted_not_failed(tmp_path: Path,
                                                               reaper: Reaper) -> None:
    x, y = two_hosts(tmp_path)
    with Watcher([x, y]) as watch:
        node(reaper, x)
        wait_until(lambda: x.node_records() and x.live_nodes(), 10)
        _stalled(watch, lambda: None)
        samples = watch.samples
        wait_until(lambda: watch.samples > samples + 1, 10)
    watch.assert_never_two()
    assert watch.stalls and watch.longest_gap > watch.max_gap, watch.stalls
