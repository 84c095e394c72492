"""The supervisor's own fence, the second line behind the guard: when the guard stalls
(frozen, or it stops acknowledging commands), this process kills the node at the
deadline itself (at once when it has passed already); a suspend of the machine
past the deadline kills the node as this process resumes. NodeProcess with the real
guard and the stand-in node (tests/harness/nodeproc.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from supervisor import clock
from supervisor.node.sweep import (
    RunMarks,
    node_key,
)
from tests.harness.aio import run
from tests.harness.bounds import kill_within
from tests.harness.loadprobe import LoadWatch
from tests.harness.nodeproc import (
    death_time,
    freeze,
    node_config,
    started,
)
from tests.harness.noderecords import read_record
from tests.harness.proc import Reaper, pid_alive

pytestmark = pytest.mark.timeout(30)


def test_frozen_guard_supervisor_kills_at_the_deadline(reaper: Reaper, tmp_path: Path) -> None:
    """The guard is SIGSTOPped: this process must kill the node at the deadline itself
    (and then the guard, which cannot report)."""
    async def body() -> None:
        proc, _ = await started(reaper, node_config(tmp_path))
        assert proc.pid is not None
        guard = freeze(proc)
        deadline = time.monotonic() + 0.5
        proc.set_deadline(deadline)
        dead_at = await death_time(proc.pid, 5)
        late = dead_at - deadline
        ex = await asyncio.wait_for(proc.wait(), 5)
        print(f"frozen guard: node dead {late * 1000:.1f} ms after the deadline; exit "
              f"reported {(time.monotonic() - deadline) * 1000:.0f} ms after it")
        assert 0 <= late < 0.25, late
        assert ex.killed_by == "deadline" and ex.signal == signal.SIGKILL
        assert not pid_alive(guard)
    run(body(), timeout=20)


def test_frozen_guard_kill_is_immediate(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, node_config(tmp_path, "--spawn-child", "--record",
                                               str(tmp_path)))
        assert proc.pid is not None
        child = reaper.track_pid(read_record(tmp_path, proc.pid)["child_pid"])
        guard = freeze(proc)
        t0 = time.monotonic()
        proc.kill()
        dead_at = await death_time(proc.pid, 2)
        ex = await asyncio.wait_for(proc.wait(), 5)
        print(f"kill with a frozen guard: node dead after {(dead_at - t0) * 1000:.1f} ms, "
              f"exit reported after {(time.monotonic() - t0) * 1000:.0f} ms")
        assert dead_at - t0 < 0.4  # without the fix: never (the guard is frozen)
        assert ex.killed_by == "kill" and ex.signal == signal.SIGKILL
        assert not pid_alive(child) and not pid_alive(guard)
    run(body(), timeout=20)


def test_unacknowledged_command_means_guard_stalled(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), ack_timeout=0.3)
        proc, _ = await started(reaper, node_config(tmp_path), marks=marks)
        assert proc.pid is not None
        for _ in range(20):  # a healthy guard acknowledges everything
            proc.set_deadline(time.monotonic() + 100)
        await asyncio.sleep(0.5)
        assert proc.running
        guard = freeze(proc)
        t0 = time.monotonic()
        proc.set_deadline(time.monotonic() + 100)  # far: only the missing ack can act
        ex = await asyncio.wait_for(proc.wait(), 5)
        took = time.monotonic() - t0
        print(f"stalled guard detected and fenced after {took * 1000:.0f} ms (ack timeout 300)")
        assert ex.killed_by == "guard_stalled" and ex.signal == signal.SIGKILL
        assert 0.3 <= took < 1.5, took
        assert not pid_alive(proc.pid) and not pid_alive(guard)
    run(body(), timeout=20)


def test_frozen_together_is_not_a_stalled_guard(reaper: Reaper, tmp_path: Path) -> None:
    """A VM pause freezes this process and the guard alike: an ack that is overdue
    only because we were frozen too must not count the guard as stalled."""
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), ack_timeout=0.3)
        proc, _ = await started(reaper, node_config(tmp_path), marks=marks)
        guard = freeze(proc)
        proc.set_deadline(time.monotonic() + 100)  # the guard cannot ack it yet
        time.sleep(0.6)  # the whole "VM" is paused: our loop too
        os.kill(guard, signal.SIGCONT)
        await asyncio.sleep(0.8)
        assert proc.running, await proc.wait()
        proc.kill()
        assert (await proc.wait()).killed_by == "kill"
    run(body(), timeout=20)


def test_a_suspend_past_the_deadline_kills_the_node_as_this_process_resumes(
        reaper: Reaper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        load: LoadWatch) -> None:
    """This process's own fence holds the deadline on CLOCK_BOOTTIME and looks at it at
    least every MAX_WAIT (the loop's timers run on CLOCK_MONOTONIC, which a suspend
    stops). The guard is frozen, so only this process can act; a suspend of 60 s is
    played by moving `supervisor.clock.now` forward: the node dies within MAX_WAIT, not
    when a 30 s timer on CLOCK_MONOTONIC would have fired."""
    async def body() -> None:
        proc, _ = await started(reaper, node_config(tmp_path))
        assert proc.pid is not None
        freeze(proc)
        proc.set_deadline(clock.now() + 30.0)
        await asyncio.sleep(0)  # the deadline's timer is armed
        real = clock.now
        monkeypatch.setattr(clock, "now", lambda: real() + 60.0)
        resumed = time.monotonic()
        dead_at = await death_time(proc.pid, 5)
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.killed_by == "deadline", ex
        assert dead_at - resumed < kill_within(clock.MAX_WAIT, load, floor=0.25), \
            dead_at - resumed
    run(body(), timeout=20)
