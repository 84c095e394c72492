"""The overlap watcher of tests/cluster.py can fail: it sees a 10 ms overlap injected on
purpose, and reports none when two nodes only follow each other.

Two stand-in node processes (tests/fake_node.py, no supervisor) whose command lines
name two hosts' record directories: what the watcher scans for. An overlap starts
when the second node has exec'd (Popen returns only then) and ends when the first
is SIGKILLed (a dead, unreaped process has no command line any more).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import FAKE_NODE, Host, Watcher
from tests.proc import Reaper

pytestmark = pytest.mark.timeout(60)

OVERLAP = 0.010


def hosts(tmp_path: Path) -> tuple[Host, Host]:
    made = []
    for name in ("a", "b"):
        h = Host(name=name, root=tmp_path / name, dsn="", lease_name="", tag="")
        h.records.mkdir(parents=True)
        made.append(h)
    return made[0], made[1]


def node(reaper: Reaper, host: Host) -> subprocess.Popen[bytes]:
    return reaper.popen([sys.executable, FAKE_NODE, "--record", str(host.records)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGKILL and reap; the moment the kill was sent."""
    at = time.monotonic()
    proc.kill()
    proc.wait(5)
    return at


def fits(window: tuple[float, float], scans: list[tuple[float, float]]) -> bool:
    """True when one whole scan fell inside `window`."""
    return any(window[0] <= s and e <= window[1] for s, e in list(scans))


def test_a_10_ms_overlap_is_seen(reaper: Reaper, tmp_path: Path) -> None:
    """Inject 10 ms overlaps until 5 of them had a whole scan inside (on a busy machine
    the watcher thread is sometimes descheduled for longer); each of those must be
    reported, naming both hosts, and no overlap may be reported outside them."""
    a, b = hosts(tmp_path)
    windows: list[tuple[float, float]] = []
    with Watcher([a, b]) as watch:
        for _ in range(40):
            first = node(reaper, a)
            time.sleep(0.05)
            second = node(reaper, b)  # returns once b's node has exec'd
            began = time.monotonic()
            time.sleep(OVERLAP)
            ended = stop(first)
            windows.append((began, ended))
            time.sleep(0.05)
            stop(second)
            time.sleep(0.05)
            if sum(fits(w, watch.scans) for w in windows) >= 5:
                break
    assert watch.longest_gap <= watch.max_gap, watch.longest_gap
    fitted = [w for w in windows if fits(w, watch.scans)]
    print(f"{len(fitted)} of {len(windows)} overlaps of {OVERLAP * 1000:.0f} ms had a whole "
          f"scan inside; {len(watch.overlaps)} overlap samples; longest gap "
          f"{watch.longest_gap * 1000:.1f} ms")
    assert len(fitted) >= 5, "the watcher never managed a whole scan inside 10 ms"
    started = dict((e, s) for s, e in watch.scans)  # scan end -> scan start
    for began, ended in fitted:
        hits = [alive for at, alive in watch.overlaps if began <= started[at] and at <= ended]
        assert hits, f"the overlap {began:.3f}..{ended:.3f} was not reported"
        assert all(len(alive["a"]) == 1 and len(alive["b"]) == 1 for alive in hits)
    # ... and every reported overlap comes from a scan that touched an injected window
    # (give or take the moments between exec and Popen's return, and between the
    # SIGKILL and the process becoming a zombie)
    slack = 0.05
    for at, _ in watch.overlaps:
        assert any(started[at] <= ended + slack and at >= began - slack
                   for began, ended in windows), at


def test_nodes_that_follow_each_other_are_no_overlap(reaper: Reaper, tmp_path: Path) -> None:
    a, b = hosts(tmp_path)
    lives: list[tuple[float, float]] = []
    with Watcher([a, b]) as watch:
        for i in range(8):
            proc = node(reaper, a if i % 2 else b)
            began = time.monotonic()
            time.sleep(0.03)
            lives.append((began, stop(proc)))  # reaped before the next one starts
    watch.assert_never_two()
    seen = sum(1 for life in lives if fits(life, watch.scans))
    assert seen >= len(lives) // 2, "the watcher hardly sampled while the nodes ran"
