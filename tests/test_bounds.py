"""The availability bounds of the end-to-end tests (tests/harness/bounds.py): never below
the floor, growing with the measured load, and checked after the wait (a late event
fails with the figures); the load watch (tests/harness/loadprobe.py) reports the worst
figures it saw."""

from __future__ import annotations

import time

import pytest

from tests.harness.bounds import allowance, kill_within, wait_within, within
from tests.harness.loadprobe import IDLE, Load, LoadWatch

pytestmark = pytest.mark.timeout(30)

BUSY = Load(sched_delay_p99=0.02, spawn=0.4, sched_delay_max=0.3)


def test_a_bound_is_nominal_plus_an_allowance_never_below_its_floor() -> None:
    assert within(2.0, IDLE, floor=1.5) == 2.0 + 1.5  # idle: the floor decides
    assert allowance(IDLE, floor=0.0) == pytest.approx(0.5 + 3 * 0.07 + 50 * 0.001)
    busy = within(2.0, BUSY, floor=1.5)
    assert busy == pytest.approx(2.0 + 0.5 + 3 * 0.4 + 50 * 0.02)  # the load decides
    assert within(2.0, BUSY, floor=1.5, spawns=2) < busy
    assert within(0.3, BUSY, spawns=0, base=0.1) == pytest.approx(0.3 + 0.1 + 50 * 0.02)


def test_a_kill_bound_counts_the_worst_wake_up() -> None:
    assert kill_within(0.5, IDLE, floor=0.3) == pytest.approx(0.8)
    assert kill_within(0.5, BUSY, floor=0.3) == pytest.approx(0.5 + 0.05 + 0.3)


def test_wait_within_fails_a_late_event_with_the_figures() -> None:
    took = wait_within(lambda: True, 1.0, IDLE, floor=0.5, what="at once")
    assert took < 0.1
    with pytest.raises(AssertionError, match=r"too late: after 2\.\d+ s, bound 1\.760 s"):
        wait_within(lambda: True, 1.0, IDLE, floor=0.5, what="too late",
                    since=time.monotonic() - 2.0)


def test_the_load_watch_reports_the_worst_it_saw() -> None:
    watch = LoadWatch(spawn_every=0.2).start()
    try:
        deadline = time.monotonic() + 10
        while watch.windows < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = watch.load()
    finally:
        watch.stop()
    assert watch.windows >= 2
    assert seen.spawn > 0 and seen.sched_delay_p99 >= IDLE.sched_delay_p99
    assert seen.sched_delay_max >= seen.sched_delay_p99
